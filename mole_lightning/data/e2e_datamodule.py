"""The E2E NLG LightningDataModule: read, encode for a causal LM and cache, batch.

Three encoded tables are cached on disk (keyed like the GLUE ones, see
``tokenized_cache``): the train and dev pairs as LM examples (prompt + reference + EOS,
labels on the reference only) and the dev meaning representations as prompts, each with
all its references (for beam search and scoring). ``data.e2e_format`` picks the text:

* ``prompt`` (default): ``format_prompt(mr)`` (ends with `` ||``), then ``" " + ref`` and
  EOS; references as written in the CSV.
* ``authors``: the LoRA / MoLEx GPT-2 code's context (``authors_context(mr)`` then token
  50256) and word-tokenised reference (``" " + word_tokenize(ref)`` then 50256); the
  references scored are word-tokenised the same way, and predictions are scored as
  decoded (their ``gpt2_decode.py`` + ``measure_scores.py``): a model trained on this
  format writes word-tokenised text, so both sides are in the same form.

``data.e2e_padding`` picks how LM batches are padded (to the longest row, or to
``data.max_length`` with ``data.pad_to_max_length=true``):

* ``masked`` (default): the tokenizer's pad token (EOS for GPT-2) and an
  ``attention_mask`` with 0 on padding; MoLEx routing never sees padding.
* ``authors``: token 0 and no ``attention_mask`` (their ``FT_Dataset`` pads input and
  target with 0 and passes no mask): the causal LM runs over the padding like text, real
  tokens never attend to it (it comes after them), and in MoLEx batch-vote routing every
  padding token votes. Labels are -100 on padding in both modes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import datasets
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from mole_lightning.core.backbone_source import check_max_length, load_tokenizer
from mole_lightning.core.e2e_text import E2E_FORMATS, IGNORE_INDEX, collate_prompts
from mole_lightning.data.collate import padded_length
from mole_lightning.data.e2e import (
    SPLIT_FILES,
    E2EExample,
    E2EPair,
    group_references,
    lm_example,
    load_e2e_split,
)
from mole_lightning.data.loaders import data_seed, make_loader
from mole_lightning.data.tokenized_cache import (
    cache_key,
    file_fingerprint,
    load_or_build,
    load_tokenized,
)
from mole_lightning.errors import ConfigError, DataFileError

E2E_PADDINGS = ("masked", "authors")
"""Values of ``data.e2e_padding``."""
AUTHORS_PAD_ID = 0
"""The padding token of ``e2e_padding=authors`` (``padding_tokens(..., 0, ...)`` in the
authors' ``data_utils.py``)."""


def check_e2e_data_options(data: DictConfig) -> None:
    """Raises ``ConfigError`` naming ``data.e2e_format`` or ``data.e2e_padding`` when its
    value is not one of the known ones."""
    for option, valid in (("e2e_format", E2E_FORMATS), ("e2e_padding", E2E_PADDINGS)):
        value = data.get(option)
        if value not in valid:
            raise ConfigError(
                f"data.{option}={value!r} is not supported; valid: {', '.join(valid)}"
            )


def encode_pairs(
    pairs: list[E2EPair], tokenizer, max_length: int, origin: str, e2e_format: str
) -> datasets.Dataset:
    """Encodes pairs in ``e2e_format`` (``E2E_FORMATS``) with ``lm_example``, unpadded
    (batches are padded by ``collate_lm``): columns ``input_ids`` and ``labels``, one list
    per pair, at most ``max_length`` long (a longer reference is cut at the end).

    Raises:
        DataFileError: a prompt leaves no room for its reference in ``max_length``
            (the message names ``origin`` and the pair's row).
    """
    ids = E2E_FORMATS[e2e_format][0]
    columns: dict[str, list] = {"input_ids": [], "labels": []}
    for row, (mr, ref) in enumerate(pairs, start=1):
        try:
            encoded = lm_example(*ids(tokenizer, mr, ref), max_length, tokenizer.eos_token_id)
        except ValueError as err:
            raise DataFileError(
                f"{origin}, data row {row} (MR {mr!r}): {err}; raise data.max_length"
            ) from None
        length = sum(encoded["attention_mask"])  # the padding is left out
        columns["input_ids"].append(encoded["input_ids"][:length])
        columns["labels"].append(encoded["labels"][:length])
    return datasets.Dataset.from_dict(columns)


def encode_prompts(examples: list[E2EExample], tokenizer, e2e_format: str) -> datasets.Dataset:
    """Encodes each MR's prompt in ``e2e_format``, as in training: columns ``input_ids``,
    ``mr``, ``references`` (all of the MR's references, in the format's text: word-tokenised
    for ``authors``) and ``idx`` (position in file order)."""
    ids, reference_text = E2E_FORMATS[e2e_format]
    return datasets.Dataset.from_dict(
        {
            "input_ids": [ids(tokenizer, e.mr)[0] for e in examples],
            "mr": [e.mr for e in examples],
            "references": [[reference_text(r) for r in e.refs] for e in examples],
            "idx": list(range(len(examples))),
        }
    )


def collate_lm(
    rows: list[dict],
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
    pad_to_length: int | None = None,
    attention_mask: bool = True,
) -> dict:
    """Right-pads LM examples into a batch.

    Args:
        rows: unpadded ``input_ids`` and ``labels`` lists.
        pad_token_id: the padding token.
        pad_to_multiple_of: round the longest row up to a multiple of this.
        pad_to_length: pad every batch to this length instead (``data.max_length`` with
            ``data.pad_to_max_length=true``).
        attention_mask: return an ``attention_mask``; ``False`` leaves it out, so the model
            runs over the padding like text (``data.e2e_padding=authors``).

    Returns:
        ``input_ids``, ``labels`` (``IGNORE_INDEX`` on the prompt and the padding) and,
        with ``attention_mask``, ``attention_mask`` (0 on padding), each ``[batch, seq]``.
    """
    seq = padded_length([len(r["input_ids"]) for r in rows], pad_to_multiple_of, pad_to_length)
    input_ids = torch.full((len(rows), seq), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), seq), dtype=torch.long)
    labels = torch.full((len(rows), seq), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        input_ids[i, :n] = torch.tensor(row["input_ids"])
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(row["labels"])
    batch = {"input_ids": input_ids, "labels": labels}
    if attention_mask:
        batch["attention_mask"] = mask
    return batch


class E2EDataModule(pl.LightningDataModule):
    """E2E NLG from the hub (``data.dir=null``) or a folder with the official
    ``trainset.csv`` and ``devset.csv``.

    ``prepare_data`` (rank 0) reads and encodes the splits and writes the caches;
    ``setup`` (every rank) only loads them. ``train_dataloader``: shuffled train pairs.
    ``val_dataloader``: ``[dev pairs (LM loss), dev MRs (generation)]``, the second left
    out when ``eval_max_mrs == 0``.

    Args:
        data: the ``data`` config node (dir, max_length, batch_size, eval_batch_size,
            num_workers, pad_to_multiple_of, pad_to_max_length, e2e_format, e2e_padding).
        backbone: the ``backbone`` config node (for the tokenizer).
        cache_dir: root folder of the caches (tables go under ``tokenized/``).
        eval_max_mrs: decode only the first N dev MRs in file order (``None``: all).
        generation_batch_size: MRs per generation batch.
    """

    def __init__(
        self,
        data: DictConfig,
        backbone: DictConfig,
        cache_dir: str | Path,
        eval_max_mrs: int | None = None,
        generation_batch_size: int = 16,
    ) -> None:
        super().__init__()
        check_e2e_data_options(data)
        self.data_cfg = data
        self.tokenizer = load_tokenizer(backbone)
        check_max_length(data.max_length, backbone, self.tokenizer)
        self.cache_dir = Path(cache_dir) / "tokenized"
        self.eval_max_mrs = eval_max_mrs
        self.generation_batch_size = generation_batch_size
        self.datasets: dict[str, datasets.Dataset] = {}

    def _source(self, split: str, table: str) -> str:
        """Identifies one cached table: its kind and text format, the split and the file's
        content hash."""
        table = f"{table}-{self.data_cfg.e2e_format}"
        data_dir = self.data_cfg.get("dir")
        if data_dir is None:
            return f"e2e-hub:{table}:{split}"
        path = Path(data_dir) / SPLIT_FILES[split]
        return f"e2e-csv:{table}:{split}:{file_fingerprint(path)}"

    def _origin(self, split: str) -> str:
        data_dir = self.data_cfg.get("dir")
        return str(Path(data_dir) / SPLIT_FILES[split]) if data_dir else f"hub e2e_nlg ({split})"

    def _tables(self) -> dict[str, tuple[str, str]]:
        """Table name -> (split, source)."""
        return {
            "train": ("train", self._source("train", "lm")),
            "dev": ("validation", self._source("validation", "lm")),
            "dev_mrs": ("validation", self._source("validation", "prompts")),
        }

    def _cache_path(self, source: str) -> Path:
        return self.cache_dir / cache_key(source, self.tokenizer, self.data_cfg.max_length, False)

    def _build(
        self, name: str, split: str, read: Callable[[str], list[E2EPair]]
    ) -> datasets.Dataset:
        if name == "dev_mrs":
            return encode_prompts(
                group_references(read(split)), self.tokenizer, self.data_cfg.e2e_format
            )
        return encode_pairs(
            read(split),
            self.tokenizer,
            self.data_cfg.max_length,
            self._origin(split),
            self.data_cfg.e2e_format,
        )

    def prepare_data(self) -> None:
        pairs: dict[str, list[E2EPair]] = {}

        def read(split: str) -> list[E2EPair]:
            if split not in pairs:
                pairs[split] = load_e2e_split(split, self.data_cfg.get("dir"))
            return pairs[split]

        for name, (split, source) in self._tables().items():
            load_or_build(self._cache_path(source), source, partial(self._build, name, split, read))

    def setup(self, stage: str | None = None) -> None:
        for name, (_split, source) in self._tables().items():
            if name not in self.datasets:
                self.datasets[name] = load_tokenized(
                    self.cache_dir, source, self.tokenizer, self.data_cfg.max_length, False
                )
        mrs = self.datasets["dev_mrs"]
        if self.eval_max_mrs is not None and self.eval_max_mrs < len(mrs):
            self.datasets["dev_mrs"] = mrs.select(range(self.eval_max_mrs))

    def _loader(self, name: str, batch_size: int, shuffle: bool, collate) -> DataLoader:
        return make_loader(
            self.datasets[name],
            batch_size,
            shuffle,
            collate,
            self.data_cfg.get("num_workers", 0),
            data_seed(self.data_cfg),
            bool(self.data_cfg.get("group_by_length")),
        )

    def _lm_collate(self):
        """``collate_lm`` with ``data.e2e_padding`` (pad token and mask) and
        ``data.pad_to_max_length``."""
        authors = self.data_cfg.e2e_padding == "authors"
        return partial(
            collate_lm,
            pad_token_id=AUTHORS_PAD_ID if authors else self.tokenizer.pad_token_id,
            pad_to_multiple_of=self.data_cfg.get("pad_to_multiple_of"),
            pad_to_length=self.data_cfg.max_length if self.data_cfg.pad_to_max_length else None,
            attention_mask=not authors,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.data_cfg.batch_size, True, self._lm_collate())

    def val_dataloader(self) -> list[DataLoader]:
        loaders = [self._loader("dev", self.data_cfg.eval_batch_size, False, self._lm_collate())]
        if self.eval_max_mrs != 0:
            collate = partial(collate_prompts, pad_token_id=self.tokenizer.pad_token_id)
            loaders.append(self._loader("dev_mrs", self.generation_batch_size, False, collate))
        return loaders
