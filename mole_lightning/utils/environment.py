"""The package versions a run used, and whether they are the project's lock of tested versions.

The lock (``requirements/constraints.txt`` beside the package in a source checkout) pins
every package of the environment in which the full test suite last passed; ``make
install`` installs through it. ``python -m mole_lightning.utils.environment`` compares
the installed distributions with it and exits 1, listing each difference, when they
differ (``make install`` runs it last).
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

import mole_lightning

KEY_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "pytorch-lightning",
    "datasets",
    "hydra-core",
    "spacy",
    "stanza",
    "wandb",
    "torchmetrics",
)
"""Packages whose version ``run_info.json`` records."""
LOCK_FILE = (
    Path(mole_lightning.__file__).resolve().parent.parent / "requirements" / "constraints.txt"
)
"""The lock of a source checkout (absent from an installed wheel)."""
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def normalize_name(name: str) -> str:
    """The PEP 503 form of a distribution name (``PyYAML`` -> ``pyyaml``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(version: str) -> str:
    """A version without its local label (``2.13.0+cpu`` -> ``2.13.0``)."""
    return version.split("+", 1)[0]


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or ``None``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str | None]:
    """``name -> installed version`` (``None`` where not installed)."""
    return {name: installed_version(name) for name in names}


def read_lock(path: Path) -> dict[str, str]:
    """``normalized name -> version`` of every ``name==version`` line of a lock.

    Raises:
        ValueError: a non-comment line that is not a ``name==version`` pin (names the
            file and line).
    """
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        match = _PIN.match(text)
        if match is None:
            raise ValueError(f"{path}:{number}: not a 'name==version' pin: {line!r}")
        pins[normalize_name(match.group(1))] = match.group(2)
    return pins


def lock_differences(path: Path) -> list[str]:
    """Each locked package whose installed version differs, as ``name: locked X,
    installed Y`` (local labels such as ``+cpu`` are ignored, as pip ignores them)."""
    differences = []
    for name, locked in sorted(read_lock(path).items()):
        installed = installed_version(name)
        if installed is None or public_version(installed) != public_version(locked):
            differences.append(f"{name}: locked {locked}, installed {installed or 'nothing'}")
    return differences


def environment_record(lock: Path = LOCK_FILE) -> dict:
    """What ``run_info.json`` records of the environment: the key packages' versions,
    the lock's path, and whether every locked version is the installed one
    (``lock_in_use``; ``False`` without a lock, with the differences listed)."""
    record: dict = {"python": sys.version.split()[0], "packages": package_versions()}
    if not lock.is_file():
        return {**record, "lock": None, "lock_in_use": False}
    differences = lock_differences(lock)
    return {
        **record,
        "lock": str(lock),
        "lock_in_use": not differences,
        **({"lock_differences": differences} if differences else {}),
    }


def main(argv: list[str] | None = None) -> int:
    """Exits 0 when the installed versions equal the lock, else 1 with the differences."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lock", nargs="?", type=Path, default=LOCK_FILE)
    lock = parser.parse_args(argv).lock
    if not lock.is_file():
        print(f"error: no lock file at {lock}", file=sys.stderr)
        return 1
    differences = lock_differences(lock)
    if differences:
        print(f"installed versions differ from {lock}:", file=sys.stderr)
        print("\n".join(f"  {d}" for d in differences), file=sys.stderr)
        return 1
    print(f"installed versions equal the lock ({len(read_lock(lock))} packages, {lock})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
