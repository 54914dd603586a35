"""One way to report a user's error: ``error: <message>`` on stderr and exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mole_lightning.errors import ConfigError, reported_as_exit
from tests.conftest import REPO


def test_user_error_exits_2_with_the_message_on_stderr(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop, reported_as_exit():
        raise ConfigError("method.alpha=2 must lie in [0, 1]")
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == "error: method.alpha=2 must lie in [0, 1]\n" and captured.out == ""


def test_reraise_prints_then_raises_the_error_itself(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError, match="bad"), reported_as_exit(reraise=True):
        raise ConfigError("bad")
    assert capsys.readouterr().err == "error: bad\n"


def test_other_exceptions_pass_unchanged(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(KeyError), reported_as_exit():
        raise KeyError("a bug, not a user's error")
    assert capsys.readouterr().err == ""


def test_a_command_line_reports_a_missing_file_with_status_2(tmp_path) -> None:
    """scripts/probe.py with a CoNLL-U file that is not there (no model is loaded)."""
    out = subprocess.run(
        [sys.executable, "scripts/probe.py", f"ud_file={tmp_path}/missing.conllu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"error: {tmp_path}/missing.conllu: CoNLL-U file not found" in out.stderr
