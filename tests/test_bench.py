"""`scripts/bench.py --quick` prints one row per method with its ratio to LoRA."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow  # every method timed in a subprocess: about 55 s
def test_bench_quick_prints_the_table() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "scripts/bench.py",
            "--quick",
            "--backbone",
            "tiny-bert",
            "--steps",
            "3",
            "--warmup",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {
        line.split("|")[1].strip(): line
        for line in out.stdout.splitlines()
        if line.startswith("| ")
    }
    assert set(rows) >= {
        "lora",
        "full",
        "adapter",
        "mole",
        "mole-pruned",
        "molex",
        "molex-capacity",
    }
    assert rows["lora"].rstrip(" |").endswith("1.00x")
    for method, line in rows.items():
        if method == "method":
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[2]) > 0 and float(cells[3]) > 0, line  # step ms, samples/s
        assert cells[-1].endswith("x") and cells[-2].endswith("x"), line
