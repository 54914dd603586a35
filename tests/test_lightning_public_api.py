"""The package steers Lightning through its public API only (issue 30): no file names
the fit loop or its combined loader, and no private attribute (``_name``) is read or set
on a Lightning object (a trainer, its strategy, loops, loggers, callbacks or modules),
which a Lightning minor release may change without a word. Read from the source (text
and ``ast``); nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mole_lightning"

FORBIDDEN_TEXT = ("fit_loop", "_combined_loader")
"""Names no line of the package may hold."""

LIGHTNING_OBJECTS = {
    "trainer",
    "strategy",
    "fit_loop",
    "epoch_loop",
    "loop",
    "logger",
    "pl_module",
    "lightning_module",
    "callback",
    "checkpoint_callback",
    "datamodule",
    "precision_plugin",
    "accelerator",
}
"""Names (variables or attributes) that hold Lightning objects in this package."""


def private_lightning_uses(root: Path) -> list[str]:
    """``file:line: what`` for every forbidden name and every private attribute of a
    Lightning object (``trainer._x``, ``self.trainer.strategy._y``) below ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(root.parent)
        for number, line in enumerate(text.splitlines(), 1):
            found += [f"{where}:{number}: {name}" for name in FORBIDDEN_TEXT if name in line]
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            if node.attr.startswith("__"):
                continue
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
            if name in LIGHTNING_OBJECTS:
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_package_uses_no_private_lightning_state() -> None:
    assert private_lightning_uses(PACKAGE) == []


def test_the_check_finds_private_uses(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "steer.py").write_text(
        "def steer(trainer, logger, self):\n"
        "    trainer.fit_loop.max_epochs = 3\n"
        "    return logger._experiment, self.trainer.strategy._model, self._own\n"
    )
    assert private_lightning_uses(package) == [
        "pkg/steer.py:2: fit_loop",
        "pkg/steer.py:3: logger._experiment",
        "pkg/steer.py:3: self.trainer.strategy._model",
    ]
