"""task=custom: your own CSV/TSV/JSON/JSONL files (or a dataset folder / hub name), read with
clear errors, trained with every method through the real Trainer, evaluated by the suites.

The shipped examples (tests/assets/custom, README there) are real GLUE rows: an RTE text
pair (CSV, text labels), SST-2 single texts (JSON Lines, integer labels, a test file) and
STS-B scores (TSV, regression).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.metrics import f1_score, matthews_corrcoef

import mole_lightning.graphs.store as store_module
from mole_lightning.core.tasks import custom_task_spec, task_spec
from mole_lightning.data.custom import label_value, read_custom_split, resolve_task
from mole_lightning.data.datamodule import graph_keys, split_source
from mole_lightning.errors import ConfigError, DataFileError, HubUnavailableError
from mole_lightning.metrics.glue import glue_metrics
from mole_lightning.resources import missing_resources
from mole_lightning.train import build_datamodule, build_module, train
from tests.conftest import REPO, compose, run_cli

ASSETS = REPO / "tests" / "assets" / "custom"
PAIR = [
    f"data.train_file={ASSETS / 'rte_pair_train.csv'}",
    f"data.validation_file={ASSETS / 'rte_pair_validation.csv'}",
    "task.text_columns=[sentence1,sentence2]",
]
SINGLE = [
    f"data.train_file={ASSETS / 'sst2_single_train.jsonl'}",
    f"data.validation_file={ASSETS / 'sst2_single_validation.jsonl'}",
]
REGRESSION = [
    f"data.train_file={ASSETS / 'stsb_regression_train.tsv'}",
    f"data.validation_file={ASSETS / 'stsb_regression_validation.tsv'}",
    "task.text_columns=[sentence1,sentence2]",
    "task.label_column=score",
    "task.metric=pearson",
]


def custom_overrides(data: list[str], method: str = "lora", max_steps: int = 2) -> list[str]:
    """A short real run of task=custom: MiniLM, spaCy, a few steps, one dev batch, CPU."""
    return [
        "task=custom",
        *data,
        f"method={method}",
        "backbone=minilm",
        "parser=spacy",
        "data.batch_size=8",
        "data.eval_batch_size=16",
        "data.num_workers=0",
        "trainer=cpu",
        f"trainer.max_steps={max_steps}",
        "+trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "logger=csv",
    ]


def data_node(**options) -> dict:
    return {"skip_malformed": False, **options}


def task_node(**task) -> dict:
    """A ``task=custom`` node (conf/task/custom.yaml's keys) with ``task`` set."""
    return {
        "name": "custom",
        "kind": "custom",
        "text_columns": ["sentence"],
        "label_column": "label",
        "labels": None,
        "metric": "acc",
        **task,
    }


def resolved_spec(task: dict, data: dict):
    """The spec a run builds from ``task``: labels read from ``data``'s training file
    (files of other splits are not read)."""
    files = {"train_file": "unread.csv", "validation_file": "unread.csv", **data}
    return task_spec(resolve_task(OmegaConf.create(task), OmegaConf.create(files)))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- reading the shipped files


def test_shipped_examples_are_small_real_and_read_as_their_kind() -> None:
    for path in ASSETS.glob("*_*.*"):
        assert path.stat().st_size < 100_000, path
    pair = resolved_spec(
        task_node(text_columns=["sentence1", "sentence2"]),
        data_node(train_file=str(ASSETS / "rte_pair_train.csv")),
    )
    assert pair.labels == ("entailment", "not_entailment") and pair.is_pair
    rows = read_custom_split(
        pair, "validation", data_node(validation_file=str(ASSETS / "rte_pair_validation.csv"))
    )
    assert len(rows) == 64 and {r.label for r in rows} == {0, 1}
    assert rows[0].text_a.startswith("Capital punishment") and rows[0].text_b

    single = resolved_spec(
        task_node(), data_node(train_file=str(ASSETS / "sst2_single_train.jsonl"))
    )
    assert single.labels == ("0", "1") and not single.is_pair
    assert single.metrics == ("acc", "f1", "mcc")
    train_rows = read_custom_split(
        single, "train", data_node(train_file=str(ASSETS / "sst2_single_train.jsonl"))
    )
    assert len(train_rows) == 400 and train_rows[0].text_b is None

    scores = resolved_spec(
        task_node(text_columns=["sentence1", "sentence2"], label_column="score", metric="spearman"),
        data_node(),
    )
    assert scores.is_regression and scores.metrics == ("pearson", "spearman")
    rows = read_custom_split(
        scores, "train", data_node(train_file=str(ASSETS / "stsb_regression_train.tsv"))
    )
    assert len(rows) == 300 and rows[0].label == pytest.approx(3.25)


def test_label_spellings_json_array_and_label_order(tmp_path: Path) -> None:
    assert label_value("1") == label_value(1) == label_value(1.0) == ("number", "1", 1.0)
    assert label_value(" pos ") == ("text", "pos", None)
    assert label_value(True) == ("boolean", "true", None)
    # a JSON list of objects; numeric labels sort numerically
    rows = [{"text": f"t{i}", "y": y} for i, y in enumerate([10, 2, 1, 2])]
    path = write(tmp_path / "train.json", json.dumps(rows))
    spec = resolved_spec(
        task_node(text_columns="text", label_column="y"), data_node(train_file=str(path))
    )
    assert spec.labels == ("1", "2", "10")
    assert [r.label for r in read_custom_split(spec, "train", data_node(train_file=str(path)))] == [
        2,
        1,
        0,
        1,
    ]
    # JSON Lines in a .json file, and given labels set the ids' order
    lines = write(tmp_path / "lines.json", "\n".join(json.dumps(r) for r in rows) + "\n")
    given = resolved_spec(
        task_node(text_columns="text", label_column="y", labels=[10, 2, 1]), data_node()
    )
    assert given.labels == ("10", "2", "1")
    assert [
        r.label for r in read_custom_split(given, "train", data_node(train_file=str(lines)))
    ] == [0, 1, 2, 1]


def test_graph_and_token_caches_are_keyed_by_content_not_name(tmp_path: Path) -> None:
    spec = resolved_spec(task_node(), data_node(train_file=str(ASSETS / "sst2_single_train.jsonl")))
    original = data_node(train_file=str(ASSETS / "sst2_single_train.jsonl"))
    copy = data_node(
        train_file=str(shutil.copy(ASSETS / "sst2_single_train.jsonl", tmp_path / "x.jsonl"))
    )
    assert graph_keys(spec, "train", original) == graph_keys(spec, "train", copy)
    assert split_source(spec, "train", original) == split_source(spec, "train", copy)
    Path(copy["train_file"]).write_text('{"sentence": "other", "label": 1}\n')
    assert graph_keys(spec, "train", original) != graph_keys(spec, "train", copy)
    assert split_source(spec, "train", original) != split_source(spec, "train", copy)


def test_custom_metrics_match_sklearn_for_three_classes() -> None:
    rng = np.random.default_rng(0)
    preds, target = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    metrics = glue_metrics(custom_task_spec(task_node(labels=["a", "b", "c"])))
    metrics.update(torch.tensor(preds), torch.tensor(target))
    out = metrics.compute()
    assert out["f1"].item() == pytest.approx(f1_score(target, preds, average="macro"), abs=1e-6)
    assert out["mcc"].item() == pytest.approx(matthews_corrcoef(target, preds), abs=1e-6)


# ---------------------------------------------------------------- errors


def read_error(
    tmp_path: Path, name: str, text: str, task: dict | None = None, split: str = "train"
) -> str:
    """The message of the ``DataFileError`` that reading ``text`` as ``name`` raises."""
    path = write(tmp_path / name, text)
    task = task_node(**(task or {}))
    with pytest.raises(DataFileError) as err:
        if split == "train":
            resolved_spec(task, data_node(train_file=str(path)))
        spec = resolved_spec({**task, "labels": task.get("labels") or ["0", "1"]}, data_node())
        read_custom_split(spec, split, data_node(**{f"{split}_file": str(path)}))
    return str(err.value)


def test_missing_column_lists_the_columns_there(tmp_path: Path) -> None:
    message = read_error(tmp_path, "train.csv", "text,label\nhello,1\nbye,0\n")
    assert "train.csv: no column 'sentence' (task.text_columns)" in message
    assert "its columns: ['text', 'label']" in message
    message = read_error(tmp_path, "t.jsonl", '{"sentence": "a", "y": 1}\n', split="validation")
    assert "no column 'label' (task.label_column)" in message and "['sentence', 'y']" in message


def test_unseen_validation_label_names_file_line_and_column(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "sentence,label\na,pos\nb,neg\n")
    dev = write(tmp_path / "dev.csv", "sentence,label\nc,pos\nd,neutral\n")
    spec = resolved_spec(task_node(), data_node(train_file=str(train)))
    with pytest.raises(DataFileError) as err:
        read_custom_split(spec, "validation", data_node(validation_file=str(dev)))
    message = str(err.value)
    assert f"{dev}:3: malformed row (column 'label': label 'neutral' is not one of" in message
    assert "['neg', 'pos']" in message and "data.skip_malformed=true" in message


@pytest.mark.parametrize(
    "name,text,expected",
    [
        ("empty.csv", "", "empty.csv: empty file"),
        ("header.tsv", "sentence\tlabel\n", "header.tsv: no rows (only a header)"),
        ("empty.json", "[]", "empty.json: no rows"),
        ("blank.jsonl", "\n\n", "blank.jsonl: empty file"),
    ],
)
def test_empty_files(tmp_path: Path, name: str, text: str, expected: str) -> None:
    assert expected in read_error(tmp_path, name, text)


def test_mixed_label_types_name_a_row_of_each(tmp_path: Path) -> None:
    text = '{"sentence": "a", "label": 0}\n{"sentence": "b", "label": 1}\n{"sentence": "c", "label": "pos"}\n'
    message = read_error(tmp_path, "train.jsonl", text)
    assert "column 'label' mixes label types" in message
    assert "train.jsonl:1: number '0'" in message and "train.jsonl:3: text 'pos'" in message
    csv_text = "sentence,label\na,0\nb,1\nc,N/A\n"
    assert "train.csv:4: text 'N/A'" in read_error(tmp_path, "train.csv", csv_text)


def test_one_label_and_non_numeric_scores(tmp_path: Path) -> None:
    message = read_error(tmp_path, "one.csv", "sentence,label\na,pos\nb,pos\n")
    assert "holds 1 distinct label(s) ['pos']; classification needs two or more" in message
    path = write(tmp_path / "scores.tsv", "sentence\tscore\na\t1.5\nb\thigh\n")
    spec = task_spec(task_node(label_column="score", metric="pearson"))
    with pytest.raises(
        DataFileError,
        match=r"scores.tsv:3: malformed row \(column 'score': score 'high' is not a number",
    ):
        read_custom_split(spec, "train", data_node(train_file=str(path)))


@pytest.mark.parametrize(
    "name,text,expected",
    [
        (
            "train.csv",
            "sentence,label\na,1\nb,0,extra\n",
            "train.csv:3: malformed row (3 fields, the header has 2)",
        ),
        (
            "train.tsv",
            "sentence\tlabel\na\n",
            "train.tsv:2: malformed row (1 fields, the header has 2)",
        ),
        (
            "train.jsonl",
            '{"sentence": "a", "label": 1}\n{"sentence": "b", "label": 0\n',
            "train.jsonl:2: not valid JSON",
        ),
        (
            "train.json",
            '[{"sentence": "a", "label": 1}, ["b", 0]]',
            "train.json: item 2: malformed row (a JSON list, not an object",
        ),
        (
            "train.jsonl",
            '{"sentence": null, "label": 1}\n',
            "train.jsonl:1: malformed row (column 'sentence' holds null, not text)",
        ),
        (
            "train.csv",
            "sentence,label\na,\n",
            "train.csv:2: malformed row (column 'label': empty label)",
        ),
        ("train.txt", "a 1\n", "train.txt: a .txt file; valid types: .csv, .tsv, .json or .jsonl"),
    ],
)
def test_malformed_rows_name_file_and_line(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = write(tmp_path / name, text)
    spec = task_spec(task_node(labels=["0", "1"]))
    with pytest.raises(DataFileError) as err:
        read_custom_split(spec, "train", data_node(train_file=str(path)))
    assert expected in str(err.value)


def test_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(b"sentence,label\nok,1\nbad \xff byte,0\n")
    with pytest.raises(DataFileError, match=r"train.csv:3: byte 0xff is not UTF-8"):
        read_custom_split(
            task_spec(task_node(labels=["0", "1"])), "train", data_node(train_file=str(path))
        )


def test_skip_malformed_drops_and_logs_each_row(tmp_path: Path, caplog) -> None:
    path = write(tmp_path / "dev.csv", "sentence,label\na,1\nb,7\nc,0,x\nd,0\n")
    spec = task_spec(task_node(labels=["0", "1"]))
    with caplog.at_level(logging.WARNING, logger="mole_lightning.data.custom"):
        rows = read_custom_split(
            spec, "validation", data_node(validation_file=str(path), skip_malformed=True)
        )
    assert [r.text_a for r in rows] == ["a", "d"]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert len(skipped) == 2 and "dev.csv:3" in skipped[0] and "dev.csv:4" in skipped[1]


def test_config_errors_name_the_option_and_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="task.metric='auc' is not a metric; valid: acc, f1, mcc"):
        task_spec(task_node(metric="auc", labels=["a", "b"]))
    with pytest.raises(ConfigError, match="task.text_columns="):
        task_spec(task_node(text_columns=["a", "b", "c"], labels=["a", "b"]))
    with pytest.raises(ConfigError, match="task.labels=.* with task.metric=pearson"):
        task_spec(task_node(metric="pearson", labels=["a", "b"]))
    with pytest.raises(
        ConfigError, match="task=custom needs data.train_file and data.validation_file"
    ):
        resolve_task(OmegaConf.create(task_node()), OmegaConf.create(data_node()))
    with pytest.raises(ConfigError, match="both set"):
        resolve_task(
            OmegaConf.create(task_node()),
            OmegaConf.create(data_node(train_file="a.csv", dataset="glue")),
        )
    cfg = compose(
        ["task=rte", "backbone=minilm", f"data.train_file={ASSETS / 'rte_pair_train.csv'}"],
        tmp_path,
    )
    with pytest.raises(ConfigError, match="data.train_file: read by task=custom only"):
        build_module(cfg)


def test_missing_files_and_an_unreachable_hub_dataset_are_listed_at_start(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose(
        [
            "task=custom",
            "backbone=minilm",
            "logger=csv",
            "data.train_file=nowhere/train.csv",
            f"data.validation_file={ASSETS / 'rte_pair_validation.csv'}",
            "data.test_file=nowhere/test.csv",
        ],
        tmp_path,
    )
    missing = [m for m in missing_resources(cfg) if m.what.startswith("custom data")]
    assert [m.why.split(":")[0] for m in missing] == [
        "data.train_file='nowhere/train.csv'",
        "data.test_file='nowhere/test.csv'",
    ]
    cfg = compose(
        ["task=custom", "backbone=minilm", "logger=csv", "data.dataset=nobody/no-such-dataset"],
        tmp_path,
    )
    (missing,) = [m for m in missing_resources(cfg) if m.what.startswith("custom data")]
    assert "HF_HUB_OFFLINE=1" in missing.why and "data.train_file" in missing.fix


def test_hub_dataset_offline_fails_with_the_way_out(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = data_node(
        dataset="nobody/no-such-dataset",
        dataset_splits={"train": "train", "validation": "validation"},
    )
    with pytest.raises(
        HubUnavailableError, match=r"nobody/no-such-dataset\[train\].*give data.train_file"
    ):
        resolve_task(OmegaConf.create(task_node()), OmegaConf.create(data))


def test_a_local_dataset_folder_reads_through_datasets(tmp_path: Path) -> None:
    """``data.dataset`` is whatever ``datasets.load_dataset`` loads: here a folder of
    JSON Lines files (the same code reads a hub dataset when online)."""
    folder = tmp_path / "sst2"
    folder.mkdir()
    shutil.copy(ASSETS / "sst2_single_train.jsonl", folder / "train.jsonl")
    shutil.copy(ASSETS / "sst2_single_validation.jsonl", folder / "validation.jsonl")
    data = OmegaConf.create(
        data_node(
            dataset=str(folder),
            dataset_config=None,
            dataset_splits={"train": "train", "validation": "validation", "test": None},
        )
    )
    spec = task_spec(resolve_task(OmegaConf.create(task_node()), data))
    rows = read_custom_split(spec, "validation", data)
    assert spec.labels == ("0", "1") and len(rows) == 100
    assert split_source(spec, "validation", data).startswith(f"custom:hub:{folder}:None:validation")
    cfg = compose(
        ["task=custom", "backbone=minilm", "logger=csv", f"data.dataset={folder}"], tmp_path
    )
    assert not [m for m in missing_resources(cfg) if m.what.startswith("custom data")]


# ---------------------------------------------------------------- training and evaluation


@pytest.mark.parametrize("method", ["lora", "adapter", "mole", "molex", "full"])
@pytest.mark.parametrize("data", ["pair", "single"])
def test_every_method_trains_and_validates(
    cache_dir: Path, tmp_path: Path, method: str, data: str
) -> None:
    overrides = custom_overrides(PAIR if data == "pair" else SINGLE, method)
    metrics = train(compose(overrides, tmp_path, cache_dir))
    assert {"val/acc", "val/f1", "val/mcc", "best/val/acc"} <= set(metrics)
    assert 0.0 <= metrics["val/acc"] <= 1.0 and metrics["global_step"] == 2
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["status"] == "finished" and info["task"] == "custom" and info["method"] == method
    hparams = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)[
        "hyper_parameters"
    ]
    assert hparams["task"]["labels"] == (
        ["entailment", "not_entailment"] if data == "pair" else ["0", "1"]
    )
    if method == "mole":  # the texts' graphs were parsed into the cache, keyed by content
        spec = task_spec(hparams["task"])
        node = OmegaConf.create(compose(overrides, tmp_path).data)
        keys = [k for split in ("train", "validation") for k in graph_keys(spec, split, node)]
        assert len(keys) == (4 if data == "pair" else 2)
        for key in keys:
            assert list((cache_dir / "graphs").glob(f"{key}.spacy.*.npz")), key


def test_mole_reuses_the_graphs_of_a_renamed_file(
    cache_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """The graph cache is keyed by a file's content: the same rows under another name
    parse nothing."""
    first = compose(custom_overrides(SINGLE, "mole"), tmp_path, cache_dir)
    datamodule = build_datamodule(first, build_module(first))
    datamodule.prepare_data()
    renamed = [
        f"data.train_file={shutil.copy(ASSETS / 'sst2_single_train.jsonl', tmp_path / 'mine.jsonl')}",
        f"data.validation_file={shutil.copy(ASSETS / 'sst2_single_validation.jsonl', tmp_path / 'dev.jsonl')}",
    ]

    def no_parsing(cfg):
        raise AssertionError("the graphs of the same rows under another name were parsed again")

    monkeypatch.setattr(store_module, "build_parser", no_parsing)
    second = compose(custom_overrides(renamed, "mole"), tmp_path, cache_dir)
    datamodule = build_datamodule(second, build_module(second))
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert [len(g) for g in datamodule.graphs["train"]] == [400]


def test_regression_run_and_test_file(
    cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    metrics = train(compose(custom_overrides(REGRESSION), tmp_path / "scores", cache_dir))
    assert {"val/pearson", "val/spearman", "best/val/pearson"} <= set(metrics)
    assert "dev metrics:\n  val/pearson" in caplog.text
    caplog.clear()
    overrides = [
        *custom_overrides(SINGLE),
        f"data.test_file={ASSETS / 'sst2_single_test.jsonl'}",
        "task.metric=f1",
    ]
    metrics = train(compose(overrides, tmp_path / "tested", cache_dir))
    assert {"test/acc", "test/f1", "test/mcc", "test/loss"} <= set(metrics)
    assert "dev and test metrics:\n  val/f1" in caplog.text  # the closing summary's heading
    saved = json.loads((tmp_path / "tested" / "metrics.json").read_text())
    assert saved["test/f1"] == pytest.approx(metrics["test/f1"])
    assert "best/val/f1" in saved


def test_evaluation_suites_accept_a_custom_checkpoint(cache_dir: Path, tmp_path: Path) -> None:
    """eval=dev reproduces the run's own dev metrics (it validated the whole split) and
    eval=perturb scores the perturbed dev file."""
    from mole_lightning.evaluation.cli import evaluate

    overrides = [o for o in custom_overrides(SINGLE) if "limit_val_batches" not in o]
    metrics = train(compose(overrides, tmp_path, cache_dir))
    cfg = OmegaConf.create(
        {
            "ckpt_path": str(tmp_path),
            "device": "cpu",
            "data_dir": None,
            "cache_dir": str(cache_dir),
            "eval_batch_size": None,
            "num_workers": 0,
            "suites": {"dev": {}, "perturb": {"kinds": ["typo"], "rates": [0.0, 0.2], "seed": 0}},
        }
    )
    dev, perturb = evaluate(cfg)
    assert dev.metrics["val/mcc"] == pytest.approx(metrics["best/val/mcc"], abs=1e-6)
    assert all(row["equal"] for row in dev.rows)
    assert {"perturb/typo/0.2/acc", "perturb/typo/0.2/mcc"} <= set(perturb.metrics)
    assert (tmp_path / "eval_perturb.csv").is_file()


def test_command_line_trains_and_reports_a_bad_file(cache_dir: Path, tmp_path: Path) -> None:
    """``python train.py task=custom ...`` with paths from the working directory, as the
    README has it; a validation file with a label the training file lacks exits 2 naming
    the file, line and column."""

    def args(validation_file: str, run_dir: Path) -> list[str]:
        pair = [
            "data.train_file=tests/assets/custom/rte_pair_train.csv",
            f"data.validation_file={validation_file}",
            "task.text_columns=[sentence1,sentence2]",
        ]
        return [
            "train.py",
            *custom_overrides(pair, "lora", max_steps=1),
            f"hydra.run.dir={run_dir}",
            f"paths.cache_dir={cache_dir}",
        ]

    done = run_cli(args("tests/assets/custom/rte_pair_validation.csv", tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["global_step"] == 1
    bad = write(
        tmp_path / "bad.csv", "sentence1,sentence2,label\na,b,entailment\nc,d,contradiction\n"
    )
    failed = run_cli(args(str(bad), tmp_path / "failed"))
    assert failed.returncode == 2
    assert f"error: {bad}:3: malformed row (column 'label': label 'contradiction'" in failed.stderr
