"""The tokenized cache under concurrency, edits and corruption (issue 15, defects 3 and 5).

Real RTE files from ``../shared/data``, the real MiniLM tokenizer, real processes.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import pytest

from mole_lightning.errors import CacheError
from tests.test_glue_data import make_datamodule


def prepare_in_process(glue_dir: str, cache: str, markers: str, barrier, results) -> None:
    """One "run": waits for the others, then prepares and loads the RTE caches, recording
    in ``markers`` every split it had to read (= tokenize) itself."""
    dm = make_datamodule(Path(glue_dir), Path(cache))
    read = dm._read

    def counted_read(split: str):
        (Path(markers) / f"{split}-{os.getpid()}").touch()
        return read(split)

    dm._read = counted_read
    barrier.wait()
    dm.prepare_data()
    dm.setup("fit")
    train = dm.datasets["train"]
    results.put(sum(sum(ids) for ids in train["input_ids"]))  # reads every mapped row


def test_concurrent_runs_on_an_empty_cache_build_it_once(glue_dir: Path, tmp_path: Path) -> None:
    """Two processes prepare the same empty cache at the same moment: before the fix both
    tokenized and rewrote the files the other had memory-mapped (SIGBUS); now one builds
    under the lock and the other waits and loads the result."""
    markers = tmp_path / "markers"
    markers.mkdir()
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(
            target=prepare_in_process,
            args=(str(glue_dir), str(tmp_path / "cache"), str(markers), barrier, results),
        )
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert [p.exitcode for p in procs] == [0, 0]
    sums = [results.get(timeout=5) for _ in procs]
    assert sums[0] == sums[1] > 0
    built = sorted(m.name.split("-")[0] for m in markers.iterdir())
    assert built == ["train", "validation"]  # each split tokenized once, by one process
    assert not list((tmp_path / "cache" / "tokenized").glob("*.tmp-*"))


@pytest.fixture
def rte_copy(glue_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the real RTE folder (the tests edit it)."""
    shutil.copytree(glue_dir / "RTE", tmp_path / "glue" / "RTE")
    return tmp_path / "glue"


def test_edit_keeping_size_and_mtime_is_retokenized(rte_copy: Path, tmp_path: Path) -> None:
    dm = make_datamodule(rte_copy, tmp_path / "cache")
    dm.prepare_data()
    dm.setup("fit")
    before = dm.datasets["train"][0]["input_ids"]

    train = rte_copy / "RTE" / "train.tsv"
    stat = train.stat()
    lines = train.read_text().split("\n")
    assert " Iraq" in lines[1]
    lines[1] = lines[1].replace(" Iraq", " dogs", 1)  # same size
    train.write_text("\n".join(lines))
    os.utime(train, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (train.stat().st_size, train.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)

    again = make_datamodule(rte_copy, tmp_path / "cache")
    again.prepare_data()
    again.setup("fit")
    after = again.datasets["train"][0]["input_ids"]
    dog = again.tokenizer.convert_tokens_to_ids("dogs")
    assert after != before and dog in after and dog not in before


def test_same_size_corruption_is_refused_then_rebuilt(rte_copy: Path, tmp_path: Path) -> None:
    dm = make_datamodule(rte_copy, tmp_path / "cache")
    dm.prepare_data()
    dm.setup("fit")
    expected = dm.datasets["train"].to_dict()["input_ids"]  # read now: the table is mapped

    (arrow,) = [
        f
        for f in (tmp_path / "cache" / "tokenized").glob("*/data/*.arrow")
        if f.stat().st_size > 100_000
    ]
    data = bytearray(arrow.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])
    arrow.write_bytes(bytes(data))  # same size, other bytes

    with pytest.raises(CacheError, match="checksum"):
        make_datamodule(rte_copy, tmp_path / "cache").setup("fit")
    rebuilt = make_datamodule(rte_copy, tmp_path / "cache")
    rebuilt.prepare_data()
    rebuilt.setup("fit")
    assert rebuilt.datasets["train"].to_dict()["input_ids"] == expected
