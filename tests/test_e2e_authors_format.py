"""``data.e2e_format=authors`` and ``data.e2e_padding=authors``: the LoRA / MoLEx GPT-2 E2E data.

Expected values are written out from the authors' public code (microsoft/LoRA,
examples/NLG): the word-tokenised lines of ``data/e2e/valid.txt`` for the same devset rows;
``gpt2_encode.py --add_bos --add_eos`` (context BPE + [50256], BPE(" " + completion) +
[50256]); ``data_utils.FT_Dataset`` (input = context + completion padded with 0 to
max_seq_length, target = input shifted by one, loss mask on the completion only, no
attention mask).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPT2TokenizerFast

from mole_lightning.core.e2e_text import IGNORE_INDEX, authors_context, authors_ids, word_tokenize
from mole_lightning.data.e2e import read_e2e_csv
from mole_lightning.data.e2e_datamodule import E2EDataModule, collate_lm, encode_pairs
from mole_lightning.errors import ConfigError
from tests.conftest import compose

GPT2_TOKENIZER = Path(__file__).parent / "assets" / "gpt2_tokenizer"
EOS = 50256
# devset row 1: name[Alimentum], area[city centre], familyFriendly[no]
ROW1_CONTEXT = [
    3672,  # "name"
    1058,  # " :"
    978, 3681, 388,  # " Al" "iment" "um"
    930,  # " |"
    1989, 1058, 1748, 7372,  # " area" " :" " city" " centre"
    930,  # " |"
    1641, 8030, 1058, 645,  # " family" " friendly" " :" " no"
    EOS,
]  # fmt: skip
# " There is a place in the city centre , Alimentum , that is not family - friendly ."
ROW1_COMPLETION = [
    1318, 318, 257, 1295, 287, 262, 1748, 7372,  # " There is a place in the city centre"
    837, 978, 3681, 388, 837,  # " ," " Al" "iment" "um" " ,"
    326, 318, 407, 1641, 532, 8030, 764,  # " that is not family - friendly ."
    EOS,
]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer() -> GPT2TokenizerFast:
    return GPT2TokenizerFast.from_pretrained(GPT2_TOKENIZER)


@pytest.fixture(scope="module")
def dev_pairs(shared_data):
    return read_e2e_csv(shared_data / "e2e" / "devset.csv")


def test_text_equals_the_authors_valid_txt_lines(dev_pairs):
    # valid.txt lines 1, 25 and 26 are devset rows 1, 25 and 26 (data rows, file order)
    expected = {
        0: (
            "name : Alimentum | area : city centre | family friendly : no",
            "There is a place in the city centre , Alimentum , that is not family - friendly .",
        ),
        24: (
            "name : Alimentum | area : riverside | family friendly : no",
            "Alimentum looks like a location where people or families aren 't allowed",
        ),
        25: (
            "name : Alimentum | area : riverside | family friendly : no",
            "Alimentum isn 't family - friendly but it is in riverside .",
        ),
    }
    for row, (context, completion) in expected.items():
        mr, ref = dev_pairs[row]
        assert (authors_context(mr), word_tokenize(ref)) == (context, completion)


def test_word_tokenize_rule():
    assert (
        authors_context("name[The Vaults], eatType[pub], priceRange[£20-25]")
        == "name : The Vaults | Type : pub | price : £ 20 - 25"
    )
    assert word_tokenize("'Aromi' it's 5out of 5;  Café!") == "' Aromi ' it 's 5out of 5 ; Café !"


def test_ids_are_gpt2_encode_with_bos_and_eos(tokenizer, dev_pairs):
    assert authors_ids(tokenizer, *dev_pairs[0]) == (ROW1_CONTEXT, ROW1_COMPLETION)
    assert authors_ids(tokenizer, dev_pairs[0].mr) == (ROW1_CONTEXT, [])


def test_padded_batch_is_ft_dataset(tokenizer, dev_pairs):
    max_length = 64
    table = encode_pairs(dev_pairs[:2], tokenizer, 512, "devset.csv", "authors")
    batch = collate_lm(
        [table[0], table[1]], pad_token_id=0, pad_to_length=max_length, attention_mask=False
    )
    assert set(batch) == {"input_ids", "labels"}  # no attention mask
    assert batch["input_ids"].shape == (2, max_length)
    context, completion = ROW1_CONTEXT, ROW1_COMPLETION
    n = len(context) + len(completion)
    assert batch["input_ids"][0].tolist() == context + completion + [0] * (max_length - n)
    assert batch["labels"][0].tolist() == (
        [IGNORE_INDEX] * len(context) + completion + [IGNORE_INDEX] * (max_length - n)
    )
    # FT_Dataset: target = (context + completion)[1:] padded with 0; mask 1 on the
    # positions len(context) - 1 ... n - 2 (those that predict the completion)
    target = (context + completion)[1:] + [0] * (max_length - n + 1)
    mask = [0.0] * (len(context) - 1) + [1.0] * len(completion)
    mask += [0.0] * (max_length - len(mask))
    shifted = batch["labels"][0, 1:].tolist() + [IGNORE_INDEX]
    assert [float(t != IGNORE_INDEX) for t in shifted] == mask
    assert [t for t, m in zip(shifted, mask, strict=True) if m] == [
        t for t, m in zip(target, mask, strict=True) if m
    ]


def datamodule(e2e_dir: Path, tmp_path: Path, *overrides: str) -> E2EDataModule:
    cfg = compose(
        ["task=e2e", "backbone=tiny-gpt2", f"data.dir={e2e_dir}", "data.num_workers=0", *overrides],
        tmp_path,
        tmp_path / "cache",
    )
    data = E2EDataModule(cfg.data, cfg.backbone, cfg.paths.cache_dir, eval_max_mrs=2)
    data.prepare_data()
    data.setup("fit")
    return data


@pytest.fixture(scope="module")
def e2e_dir(shared_data, tmp_path_factory) -> Path:
    """The first rows of the real train and dev files (fast to encode)."""
    folder = tmp_path_factory.mktemp("e2e")
    for name in ("trainset.csv", "devset.csv"):
        lines = (shared_data / "e2e" / name).read_text(encoding="utf-8").splitlines()[:13]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_datamodule_authors_format_and_padding(e2e_dir, tmp_path):
    data = datamodule(
        e2e_dir,
        tmp_path,
        "data.e2e_format=authors",
        "data.e2e_padding=authors",
        "data.pad_to_max_length=true",
        "data.max_length=256",  # tiny-gpt2 has 256 positions
        "data.batch_size=4",
    )
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"input_ids", "labels"} and batch["input_ids"].shape == (4, 256)
    lengths = [(row != IGNORE_INDEX).nonzero().max().item() + 1 for row in batch["labels"]]
    for row, n in enumerate(lengths):
        assert batch["input_ids"][row, n - 1] == EOS and (batch["input_ids"][row, n:] == 0).all()
    dev = data.datasets["dev_mrs"][0]
    assert dev["input_ids"] == ROW1_CONTEXT
    assert dev["references"][0] == word_tokenize(dev["references"][0])
    assert dev["references"][0].endswith("not family - friendly .")
    assert data.datasets["dev"][0]["input_ids"] == ROW1_CONTEXT + ROW1_COMPLETION


def test_default_masked_padding_to_max_length(e2e_dir, tmp_path):
    data = datamodule(e2e_dir, tmp_path, "data.pad_to_max_length=true", "data.max_length=96")
    batch = next(iter(data.val_dataloader()[0]))
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (len(batch["labels"]), 96)
    n = int(batch["attention_mask"][0].sum())
    assert (batch["input_ids"][0, n:] == data.tokenizer.pad_token_id).all()
    assert data.tokenizer.decode(data.datasets["dev_mrs"][0]["input_ids"]).endswith(" ||")
    unpadded = datamodule(e2e_dir, tmp_path / "dynamic", "data.max_length=96")
    lengths = unpadded.val_dataloader()[0]
    assert next(iter(lengths))["input_ids"].shape[1] < 96  # dynamic padding by default


@pytest.mark.parametrize(
    "override, option",
    [("data.e2e_format=lora", "e2e_format"), ("data.e2e_padding=0", "e2e_padding")],
)
def test_unknown_option_names_it(e2e_dir, tmp_path, override, option):
    with pytest.raises(ConfigError, match=rf"data\.{option}=.* valid: "):
        datamodule(e2e_dir, tmp_path, override)


def test_authors_padding_runs_the_model_without_a_mask(e2e_dir, tmp_path):
    """The LM loss of a batch without an attention mask equals the masked one's: padding
    comes after every real token, so causal attention never lets a real token see it."""
    from mole_lightning.models.generation_module import GenerationModule

    cfg = compose(["task=e2e", "backbone=tiny-gpt2", "method=lora"], tmp_path)
    module = GenerationModule(cfg.task, cfg.method, cfg.backbone, cfg.optim).eval()
    data = datamodule(e2e_dir, tmp_path, "data.e2e_padding=authors", "data.pad_to_max_length=true")
    rows = [data.datasets["train"][i] for i in range(3)]
    authors = collate_lm(rows, 0, pad_to_length=128, attention_mask=False)
    masked = collate_lm(rows, EOS)
    with torch.no_grad():
        loss_authors, count_authors = module.lm_loss(authors)
        loss_masked, count_masked = module.lm_loss(masked)
    assert count_authors == count_masked
    torch.testing.assert_close(loss_authors, loss_masked, rtol=1e-5, atol=1e-6)
