"""E2E NLG training end to end: real E2E rows, the real GPT-2 BPE on a tiny random GPT-2,
the real Trainer, beam search and the official metrics (Java), checkpoints that reload."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mole_lightning.core.backbone_source import load_tokenizer
from mole_lightning.core.e2e_text import authors_ids, collate_prompts
from mole_lightning.data.e2e import group_references, read_e2e_csv
from mole_lightning.data.e2e_datamodule import E2EDataModule, collate_lm
from mole_lightning.errors import ConfigError
from mole_lightning.methods import method_config
from mole_lightning.metrics.e2e import METRICS, score_e2e
from mole_lightning.models.generation_module import GenerationModule
from mole_lightning.train import build_module, train
from tests.conftest import REPO, compose

ROWS = 40
MRS = 4


@pytest.fixture(scope="module")
def e2e_dir(shared_data: Path, tmp_path_factory) -> Path:
    """``trainset.csv`` and ``devset.csv``: the first 40 rows (6 MRs) of the real dev set,
    in the official format."""
    with (shared_data / "e2e" / "devset.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[: ROWS + 1]
    folder = tmp_path_factory.mktemp("e2e")
    for name in ("trainset.csv", "devset.csv"):
        with (folder / name).open("w", encoding="utf-8", newline="") as f:
            csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows)
    return folder


def run_overrides(
    e2e_dir: Path, method: str, *extra: str, epochs: int = 1, batches: int = 3
) -> list[str]:
    return [
        "task=e2e",
        f"method={method}",
        "backbone=tiny-gpt2",
        f"data.dir={e2e_dir}",
        "data.batch_size=8",
        "data.eval_batch_size=16",
        "data.num_workers=0",
        "trainer=cpu",
        f"trainer.max_epochs={epochs}",
        f"+trainer.limit_train_batches={batches}",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "logger=csv",
        f"task.eval_max_mrs={MRS}",
        "task.num_beams=2",
        "task.max_new_tokens=12",
        *extra,
    ]


def dev_references(e2e_dir: Path) -> list[list[str]]:
    return [list(e.refs) for e in group_references(read_e2e_csv(e2e_dir / "devset.csv"))[:MRS]]


def check_run_outputs(
    out: Path, metrics: dict, e2e_dir: Path, steps: int, best: bool = True
) -> list[str]:
    """The run's files hold the five metrics (and with ``best`` those of the best
    checkpoint), the official scores of the written predictions against the dev file's
    references. Returns the predictions."""
    saved = json.loads((out / "metrics.json").read_text())
    assert (
        saved["global_step"] == steps
        and json.loads((out / "run_info.json").read_text())["status"] == "finished"
    )
    predictions = (
        (out / f"e2e_predictions_step{steps}.txt").read_text(encoding="utf-8").splitlines()
    )
    assert len(predictions) == MRS and all(p.strip() for p in predictions)
    expected = score_e2e(predictions, dev_references(e2e_dir))
    for name in METRICS:
        assert saved[f"val/{name}"] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name
        if best:
            assert saved[f"best/val/{name}"] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), (
                name
            )
    assert saved["val/loss"] == pytest.approx(metrics["val/loss"])
    assert (out / "checkpoints" / "last.ckpt").is_file()
    return predictions


@pytest.fixture(scope="module")
def lora_run(e2e_dir: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("lora_run")
    metrics = train(compose(run_overrides(e2e_dir, "lora"), out, out / "cache"))
    return out, metrics


def test_lora_run_trains_generates_and_scores(lora_run, e2e_dir: Path) -> None:
    out, metrics = lora_run
    check_run_outputs(out, metrics, e2e_dir, steps=3)
    # only the LoRA matrices of the 2 fused q/k/v projections train: 2 x r (32 + 96)
    assert metrics["params/trainable"] == 2 * 8 * (32 + 96)
    assert 9.0 < metrics["val/loss"] < 11.5  # near ln(50257) = 10.8 for a random tiny GPT-2


def test_lora_checkpoint_reloads_and_generates_the_same_text(lora_run, e2e_dir: Path) -> None:
    out, _ = lora_run
    predictions = (out / "e2e_predictions_step3.txt").read_text(encoding="utf-8").splitlines()
    checkpoint = torch.load(
        out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert all("lora_" in k for k in checkpoint["state_dict"])  # trained weights only
    module = GenerationModule.load_from_checkpoint(out / "checkpoints" / "last.ckpt")
    mrs = [e.mr for e in group_references(read_e2e_csv(e2e_dir / "devset.csv"))[:MRS]]
    assert module.generate_texts(mrs) == predictions

    # a model trained in the authors' format is prompted with their context
    prompts = []
    module.generate_ids = lambda ids, mask: prompts.append(ids) or [""] * len(ids)
    module.generate_texts(mrs[:1], e2e_format="authors")
    assert prompts[0][0].tolist() == authors_ids(module.tokenizer, mrs[0], None)[0]
    assert prompts[0][0].tolist()[-1] == 50256
    with pytest.raises(ConfigError, match="valid: prompt, authors"):
        module.generate_texts(mrs, e2e_format="raw")


def test_molex_run_learns_scores_and_exports_layer_selection(e2e_dir: Path, tmp_path: Path) -> None:
    """MoLEx over full fine-tuning (a tiny random GPT-2 learns words in 40 steps only with
    its embeddings trainable), the authors' batch-vote routing with a balance loss."""
    overrides = run_overrides(
        e2e_dir,
        "molex",
        "method.base=full",
        "method.lr=1e-2",
        "optim.warmup_ratio=0",
        "method.routing=batch_vote",
        "method.balance_loss=0.01",
        "method.alpha=0.95",
        "task.max_new_tokens=24",
        "trainer.check_val_every_n_epoch=8",
        "validate_best=false",
        epochs=8,
        batches=5,
    )
    metrics = train(compose(overrides, tmp_path, tmp_path / "cache"))
    predictions = check_run_outputs(tmp_path, metrics, e2e_dir, steps=40, best=False)
    assert metrics["val/loss"] < 5.0  # from ln(50257) = 10.8
    assert metrics["val/bleu"] > 0 and metrics["val/rouge_l"] > 0
    assert any("Aliment" in p for p in predictions)  # the first MRs' restaurant, Alimentum
    # the Switch balance loss of 2 routed layers over 2 candidates lies in (0, 2 x 2] x 0.01
    assert 0 < metrics["train/aux_loss"] <= 0.04
    selection = json.loads((tmp_path / "molex_selection.json").read_text())
    assert (tmp_path / "molex_selection.png").stat().st_size > 0
    # one choice per dev pair and routed layer: decoding passes are not counted
    assert [sum(row) for row in selection["counts"]] == [ROWS, ROWS]


def test_datamodule_caches_and_batches(e2e_dir: Path, tmp_path: Path) -> None:
    cfg = compose(run_overrides(e2e_dir, "lora"), tmp_path, tmp_path / "cache")
    data = E2EDataModule(cfg.data, cfg.backbone, cfg.paths.cache_dir, eval_max_mrs=MRS)
    data.prepare_data()
    metas = sorted((tmp_path / "cache" / "tokenized").glob("*/meta.json"))
    assert len(metas) == 3
    stamps = [m.stat().st_mtime_ns for m in metas]
    data.prepare_data()  # second run: nothing re-encoded
    assert [m.stat().st_mtime_ns for m in metas] == stamps
    data.setup("fit")
    assert len(data.datasets["train"]) == ROWS and len(data.datasets["dev_mrs"]) == MRS

    lm = collate_lm([data.datasets["train"][i] for i in range(3)], pad_token_id=50256)
    lengths = [len(data.datasets["train"][i]["input_ids"]) for i in range(3)]
    assert lm["input_ids"].shape == (3, max(lengths))
    for row, n in enumerate(lengths):
        assert lm["attention_mask"][row].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert (lm["labels"][row, n:] == -100).all() and lm["labels"][
            row, n - 1
        ] == 50256  # EOS is a target

    prompts = collate_prompts([data.datasets["dev_mrs"][i] for i in range(MRS)], pad_token_id=50256)
    assert prompts["attention_mask"][
        :, -1
    ].all()  # left padding: every prompt ends at the last column
    assert prompts["references"] == dev_references(e2e_dir)
    tokenizer = data.tokenizer
    assert tokenizer.decode(prompts["input_ids"][0][prompts["attention_mask"][0].bool()]).endswith(
        " ||"
    )


def test_tiny_gpt2_tokenizer_resolves_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    cfg = compose(["task=e2e", "backbone=tiny-gpt2"], tmp_path)
    monkeypatch.chdir(tmp_path)
    tokenizer = load_tokenizer(cfg.backbone)
    assert len(tokenizer) == 50257 and tokenizer.eos_token_id == tokenizer.pad_token_id == 50256
    assert tokenizer(" Alimentum")["input_ids"] == [978, 3681, 388]


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["method=adapter"], "not supported on the causal LM"),
        (["method=molex", "method.base=adapter"], "method.base=adapter"),
        (["method=lora", "backbone=minilm"], "causal-LM backbone"),
    ],
)
def test_unsupported_method_or_backbone_is_refused(
    overrides: list[str], match: str, tmp_path: Path
) -> None:
    cfg = compose(["task=e2e", "backbone=tiny-gpt2", *overrides], tmp_path)
    with pytest.raises(ConfigError, match=match):
        build_module(cfg)


def test_cli_composes_e2e_with_gpt2() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "train.py",
            "task=e2e",
            "method=molex",
            "backbone=gpt2",
            "data.dir=../shared/data/e2e",
            "--cfg",
            "job",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    printed = OmegaConf.create(out.stdout)
    assert printed.task.kind == "generation" and printed.task.num_beams == 10
    assert (
        printed.backbone.pretrained == "openai-community/gpt2"
        and printed.backbone.lora_target_modules == ["c_attn"]
    )
    assert (
        printed.data.dir == "../shared/data/e2e"
        and printed.callbacks.model_checkpoint.monitor == "val/loss"
    )


def test_molex_e2e_experiment_has_the_authors_values(tmp_path: Path) -> None:
    cfg = compose(["experiment=molex_e2e"], tmp_path)
    assert (cfg.task.name, cfg.method.name, cfg.backbone.name) == ("e2e", "molex", "gpt2-medium")
    assert (cfg.method.base, cfg.method.r, cfg.method.lora_alpha, cfg.method.dropout) == (
        "lora",
        4,
        32,
        0.1,
    )
    assert cfg.optim.lr == 2e-4 and cfg.optim.warmup_steps == 500 and cfg.optim.weight_decay == 0.01
    assert (
        cfg.data.batch_size == 8
        and cfg.trainer.max_epochs == 5
        and cfg.trainer.gradient_clip_val == 0
    )
    assert (cfg.task.num_beams, cfg.task.length_penalty, cfg.task.no_repeat_ngram_size) == (
        10,
        0.8,
        4,
    )
    assert cfg.task.label_smoothing == 0.1
    molex = method_config(cfg.method)
    assert (molex.alpha, molex.routing, molex.top_k, molex.learned_alpha) == (
        0.95,
        "batch_vote",
        1,
        False,
    )
    routed, candidates = molex.resolve_layers(24)  # GPT-2 medium
    assert routed == list(range(12)) and candidates == list(range(24))


def test_length_grouped_training_order(e2e_dir: Path, tmp_path: Path) -> None:
    """``data.group_by_length`` groups E2E training pairs as it groups GLUE rows."""
    overrides = [*run_overrides(e2e_dir, "lora"), "data.group_by_length=true"]
    cfg = compose(overrides, tmp_path, tmp_path / "cache")
    data = E2EDataModule(cfg.data, cfg.backbone, cfg.paths.cache_dir, eval_max_mrs=MRS)
    data.prepare_data()
    data.setup("fit")
    sampler = data.train_dataloader().sampler
    lengths = [len(row["input_ids"]) for row in data.datasets["train"]]
    assert sampler.lengths == lengths
    order = list(iter(sampler))
    assert sorted(order) == list(range(ROWS))
    assert lengths[order[0]] == max(lengths)
