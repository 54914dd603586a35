"""The lock of tested versions: parsing, comparison with the installed environment, record."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from mole_lightning.utils.environment import (
    KEY_PACKAGES,
    LOCK_FILE,
    environment_record,
    lock_differences,
    main,
    read_lock,
)


def test_the_project_lock_pins_every_key_package():
    """(`make install` checks that the installed versions equal it; `make test-latest`
    runs this suite on other versions, so the suite itself does not.)"""
    pins = read_lock(LOCK_FILE)
    assert set(KEY_PACKAGES) <= set(pins) and {"pip", "setuptools"} <= set(pins)
    assert pins["torch"] == "2.13.0"
    record = environment_record()
    assert record["lock"] == str(LOCK_FILE)
    assert record["lock_in_use"] is (lock_differences(LOCK_FILE) == [])
    assert record["packages"]["transformers"] == metadata.version("transformers")


def test_a_different_version_is_named(tmp_path: Path):
    torch_version = metadata.version("torch")
    lock = tmp_path / "constraints.txt"
    lock.write_text(
        "# comment\n"
        f"torch=={torch_version.split('+')[0]}  # local label ignored\n"
        "transformers==0.0.1\n"
        "no-such-package-anywhere==1.0\n"
    )
    assert lock_differences(lock) == [
        "no-such-package-anywhere: locked 1.0, installed nothing",
        f"transformers: locked 0.0.1, installed {metadata.version('transformers')}",
    ]
    record = environment_record(lock)
    assert record["lock_in_use"] is False and len(record["lock_differences"]) == 2
    assert main([str(lock)]) == 1
    assert environment_record(tmp_path / "absent.txt")["lock_in_use"] is False


def test_a_line_that_is_not_a_pin_names_file_and_line(tmp_path: Path):
    lock = tmp_path / "constraints.txt"
    lock.write_text("torch==2.13.0\ntransformers>=5\n")
    with pytest.raises(ValueError, match=r"constraints.txt:2: not a 'name==version' pin"):
        read_lock(lock)
