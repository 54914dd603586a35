"""What a run prints: progress bars only on a terminal, and three lines of Lightning and
torch that are not errors kept out of the run's log.

- progress bars (Lightning's Rich/TQDM bar, ``datasets``' "tokenizing", transformers'
  "Loading weights", the parse bars) draw frames that a log file keeps as noise: off when
  stdout is not a terminal (``on_terminal``); ``callbacks.progress_log_seconds`` still
  writes progress lines (``ProgressLog``);
- Lightning's "Tip: ... litlogger" advertisement (a logging filter on that one message);
- torch's ``isinstance(treespec, LeafSpec)`` deprecation, raised inside Lightning's own
  ``_pytree`` helpers on every fit and validate (a warnings filter on that one message);
- "Total FLOPs: 0" and the FLOPs column of the model summary (Lightning counts FLOPs only
  with an ``example_input_array``, which the modules do not set): ``PlainModelSummary``.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from pytorch_lightning.callbacks import ModelSummary
from pytorch_lightning.utilities.model_summary.model_summary import _format_summary_table

log = logging.getLogger(__name__)

LEAFSPEC_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
LIGHTNING_RANK_ZERO_LOGGER = "pytorch_lightning.utilities.rank_zero"


def on_terminal() -> bool:
    """Whether stdout is a terminal (or a notebook, which draws bars as widgets)."""
    return sys.stdout.isatty() or "ipykernel" in sys.modules


class DropLitloggerTip(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger" line, nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("Tip:" in message and "litlogger" in message)


def silence_known_noise() -> None:
    """Installs the litlogger-tip filter and the LeafSpec warnings filter (once)."""
    logger = logging.getLogger(LIGHTNING_RANK_ZERO_LOGGER)
    if not any(isinstance(f, DropLitloggerTip) for f in logger.filters):
        logger.addFilter(DropLitloggerTip())
    warnings.filterwarnings("ignore", message=LEAFSPEC_DEPRECATION, category=FutureWarning)


def progress_bars_off() -> None:
    """Turns off the progress bars of ``datasets``, ``transformers`` and the hub client."""
    import datasets
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    disable_progress_bars()


class PlainModelSummary(ModelSummary):
    """Lightning's model summary as plain text in the log (no Rich box drawing), without
    the FLOPs column and "Total FLOPs" line when no FLOPs were counted (always, here:
    the modules set no ``example_input_array``)."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if not total_flops:
            summary_data = [(name, column) for name, column in summary_data if name != "FLOPs"]
        table = _format_summary_table(
            total_parameters,
            trainable_parameters,
            model_size,
            total_training_modes,
            total_flops,
            *summary_data,
        )
        if not total_flops:
            table = table.rsplit("\n", 1)[0]  # the "Total Flops" line
        log.info("\n" + table)
