"""The LightningModule for data-to-text generation (E2E NLG): a tuned causal LM trained on
the references, beam search on the dev meaning representations, the challenge's metrics."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from omegaconf import DictConfig
from torch.nn import functional as F
from transformers import PreTrainedModel

from mole_lightning.core.backbone_source import load_tokenizer
from mole_lightning.core.e2e_text import E2E_FORMATS, IGNORE_INDEX, collate_prompts
from mole_lightning.core.paths import run_dir
from mole_lightning.errors import ConfigError
from mole_lightning.methods import METHODS, MethodConfig, build_encoder, method_config
from mole_lightning.methods.molex import MolexConfig
from mole_lightning.metrics.e2e import score_e2e
from mole_lightning.models.backbone import load_backbone
from mole_lightning.models.tuned_module import TunedModule


@dataclass
class GenerationSettings:
    """Beam-search settings of ``transformers``' ``generate`` (the ``task`` node's keys).

    Attributes:
        eos_token_ids: tokens that end a text (``None``: the tokenizer's EOS; the MoLEx
            authors' E2E decoding: 50256 and 628, GPT-2's ``"\n\n"``).
        first_step_pad_to: MoLEx batch-vote decoding as the authors run it: the routing
            of the first decoding step is voted over the prompt right-padded to this
            many tokens with ``first_step_pad_id`` (their first call runs the padded
            prompt, so padding votes; causal attention keeps the prompt's states
            otherwise the same); ``None``: the prompt alone votes.
        first_step_pad_id: the padding token of that vote (the authors: 0).
    """

    num_beams: int = 10
    max_new_tokens: int = 64
    length_penalty: float = 0.8
    no_repeat_ngram_size: int = 4
    repetition_penalty: float = 1.0
    eos_token_ids: list[int] | None = None
    first_step_pad_to: int | None = None
    first_step_pad_id: int = 0

    @classmethod
    def from_task(cls, task: DictConfig) -> GenerationSettings:
        settings = cls(**{f.name: task[f.name] for f in fields(cls) if f.name in task})
        if settings.eos_token_ids is not None:
            settings.eos_token_ids = [int(i) for i in settings.eos_token_ids]
        return settings


def check_method(config: MethodConfig, backbone: DictConfig) -> None:
    """Refuses method × backbone combinations a causal LM cannot run.

    Raises:
        ConfigError: the backbone is not a causal LM, or the method's options need
            something GPT-2 blocks or E2E batches lack (``causal_lm_refusal``: adapter,
            the BERT-style ``output`` block it hooks; mole, word graphs).
    """
    if not backbone.get("causal_lm"):
        raise ConfigError(
            f"task kind 'generation' needs a causal-LM backbone (gpt2, gpt2-medium, tiny-gpt2); "
            f"backbone={backbone.name!r} is not one (set causal_lm: true in its config if it is)"
        )
    refusal = config.causal_lm_refusal()
    if refusal is not None:
        valid = [n for n, m in METHODS.items() if m.config_cls().causal_lm_refusal() is None]
        raise ConfigError(
            f"method={config.name} is not supported on the causal LM {backbone.name!r}: "
            f"{refusal}; valid: {', '.join(valid)} (with their default options)"
        )


def load_causal_lm(backbone: DictConfig) -> PreTrainedModel:
    """The backbone with its LM head (a random init is drawn from a fixed seed:
    ``load_backbone``)."""
    return load_backbone(backbone, causal_lm=True)


class GenerationModule(TunedModule):
    """Causal LM + PEFT method, trained on E2E NLG.

    Training minimises the next-token cross-entropy on the reference tokens (prompt and
    padding are ``IGNORE_INDEX``) plus the method's auxiliary loss. Validation logs
    ``val/loss`` (token-level NLL, no label smoothing) over the dev pairs and, over the
    decoded dev MRs, ``val/bleu``, ``val/nist``, ``val/meteor``, ``val/rouge_l`` and
    ``val/cider``, and writes the outputs (one line per MR, file order) to
    ``<run dir>/e2e_predictions_step<k>.txt``. MoLEx's selection counts cover the dev
    pairs only (one count per pair and routed layer), not the decoding passes.

    Checkpoints, the optimizer and parameter accounting come from ``TunedModule``.

    Args:
        task: the ``task`` node (monitor, mode, label_smoothing, decoding settings).
        method: the ``method`` node (full, lora or molex).
        backbone: the ``backbone`` node (``causal_lm: true``).
        optim: the ``optim`` node.
    """

    def __init__(
        self, task: DictConfig, method: DictConfig, backbone: DictConfig, optim: DictConfig
    ) -> None:
        super().__init__(task, method, backbone, optim, default_mode="min")
        cfgs = {k: self.config_node(k) for k in ("task", "backbone")}
        config = method_config(self.config_node("method"))
        check_method(config, cfgs["backbone"])
        self.encoder = build_encoder(load_causal_lm(cfgs["backbone"]), config, cfgs["backbone"])
        self.tokenizer = load_tokenizer(cfgs["backbone"])
        self.generation = GenerationSettings.from_task(cfgs["task"])
        if self.generation.first_step_pad_to is not None and not (
            isinstance(config, MolexConfig) and config.routing == "batch_vote"
        ):
            raise ConfigError(
                "task.first_step_pad_to (padding votes in the first decoding step) needs "
                f"method=molex with method.routing=batch_vote; got method={config.name} "
                f"routing={getattr(config, 'routing', None)}"
            )
        self.label_smoothing = float(cfgs["task"].get("label_smoothing", 0.0))
        self._generated: list[tuple[int, str, list[str]]] = []

    # --- language-model loss ----------------------------------------------------------------

    def lm_loss(self, batch: dict, label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
        """Mean next-token cross-entropy over the labelled tokens.

        Args:
            batch: ``input_ids``, ``labels`` and (unless ``data.e2e_padding=authors``)
                ``attention_mask``, each ``[batch, seq]``; without a mask the model runs
                causally over every position, padding included.

        Returns:
            The loss and the number of predicted tokens. Only the positions that predict a
            label go through the LM head (``[tokens, vocab]`` logits, not ``[batch, seq, vocab]``).
        """
        model = self.encoder.backbone
        hidden = model.base_model(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            use_cache=False,
        ).last_hidden_state
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE_INDEX
        logits = model.get_output_embeddings()(hidden[:, :-1][keep])
        loss = F.cross_entropy(logits.float(), targets[keep], label_smoothing=label_smoothing)
        return loss, int(keep.sum())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self.lm_loss(batch, self.label_smoothing)
        batch_size = len(batch["input_ids"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        aux = self.encoder.aux_loss()
        if aux is not None:
            self.log("train/aux_loss", aux, batch_size=batch_size)
            loss = loss + aux
        return loss

    # --- generation ---------------------------------------------------------------------------

    @torch.no_grad()
    def generate_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[str]:
        """Beam-search continuations of left-padded prompts.

        Args:
            input_ids, attention_mask: ``[batch, prompt]``, padding on the left.

        Returns:
            One decoded text per row (special tokens dropped, whitespace collapsed).
        """
        routing = self.encoder.parts["molex"] if "molex" in self.encoder.parts else None
        counts = routing.selection_counts.clone() if routing is not None else None
        if routing is not None and self.generation.first_step_pad_to is not None:
            routing.force_choice_on_next_call(
                self.padded_first_step_choices(input_ids, attention_mask)
            )
        eos = self.generation.eos_token_ids or self.tokenizer.eos_token_id
        output = self.encoder.backbone.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            # MoLEx routers see the whole sequence at every step, unless the method
            # decodes the authors' way (mixed KV cache)
            use_cache=routing is None or routing.cfg.decode_with_mixed_kv_cache,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=eos,
            num_beams=self.generation.num_beams,
            max_new_tokens=self.generation.max_new_tokens,
            length_penalty=self.generation.length_penalty,
            no_repeat_ngram_size=self.generation.no_repeat_ngram_size,
            repetition_penalty=self.generation.repetition_penalty,
        )
        if routing is not None:
            routing.selection_counts.copy_(counts)
        texts = self.tokenizer.batch_decode(
            output[:, input_ids.shape[1] :], skip_special_tokens=True
        )
        return [" ".join(text.split()) for text in texts]

    @torch.no_grad()
    def padded_first_step_choices(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[int, int]:
        """The batch-vote choice of every routed layer when the prompts run right-padded
        to ``first_step_pad_to`` tokens of ``first_step_pad_id`` (unmasked: the authors'
        first decoding call, where padding votes). Their first call then continues on
        the prompt positions, which causal attention keeps independent of the padding
        given these choices: ``generate_ids`` forces them on its first model call."""
        routing = self.encoder.parts["molex"]
        pad = max(self.generation.first_step_pad_to - input_ids.shape[1], 0)
        ids = F.pad(input_ids, (0, pad), value=self.generation.first_step_pad_id)
        mask = F.pad(attention_mask, (0, pad), value=1)
        before = routing.selection_counts.clone()
        self.encoder.backbone.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
        chosen = routing.selection_counts - before
        routing.selection_counts.copy_(before)
        return {t: int(chosen[t].argmax()) for t in routing.routed_layers}

    def generate_texts(self, mrs: list[str], e2e_format: str = "prompt") -> list[str]:
        """Generates one text per meaning representation (``"name[The Vaults], eatType[pub]"``)
        prompted in ``e2e_format`` (the run's ``data.e2e_format``: ``prompt`` or
        ``authors``), with the task's beam search, in eval mode, in one batch.

        Raises:
            ConfigError: an unknown ``e2e_format``.
        """
        if e2e_format not in E2E_FORMATS:
            raise ConfigError(
                f"e2e_format={e2e_format!r} is not an E2E format; valid: {', '.join(E2E_FORMATS)}"
            )
        prompt_ids = E2E_FORMATS[e2e_format][0]
        rows = [
            {
                "input_ids": prompt_ids(self.tokenizer, mr, None)[0],
                "idx": i,
                "mr": mr,
                "references": [],
            }
            for i, mr in enumerate(mrs)
        ]
        batch = collate_prompts(rows, self.tokenizer.pad_token_id)
        was_training = self.training
        self.eval()
        try:
            return self.generate_ids(
                batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
            )
        finally:
            self.train(was_training)

    # --- validation ---------------------------------------------------------------------------

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 0:
            loss, tokens = self.lm_loss(batch)
            self.log("val/loss", loss, batch_size=tokens, add_dataloader_idx=False, sync_dist=True)
            return
        texts = self.generate_ids(batch["input_ids"], batch["attention_mask"])
        self._generated.extend(zip(batch["idx"].tolist(), texts, batch["references"], strict=True))

    def _gathered_outputs(self) -> list[tuple[int, str, list[str]]]:
        """Every rank's ``(idx, text, references)``, one per MR, in ``idx`` order
        (a distributed sampler's padding duplicates are dropped)."""
        items = self._generated
        if self.trainer.world_size > 1:
            shards: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(shards, items)
            items = [item for shard in shards for item in shard]
        return sorted({idx: (idx, text, refs) for idx, text, refs in items}.values())

    def on_validation_epoch_end(self) -> None:
        outputs, self._generated = self._gathered_outputs(), []
        if outputs:
            texts = [text for _, text, _ in outputs]
            scores = (
                score_e2e(texts, [refs for _, _, refs in outputs])
                if self.trainer.is_global_zero
                else None
            )
            scores = self.trainer.strategy.broadcast(scores)
            self.log_dict(
                {f"val/{k}": float(v) for k, v in scores.items()}, prog_bar=True, sync_dist=True
            )
            if self.trainer.is_global_zero and not self.trainer.sanity_checking:
                self.write_predictions(texts)
        score = self.trainer.callback_metrics.get(self.monitor)
        if score is not None and not self.trainer.sanity_checking:
            self.best_score.update(score)
            self.log(f"{self.monitor}_best", self.best_score.compute(), prog_bar=True)

    def write_predictions(self, texts: list[str]) -> None:
        """Writes ``<run dir>/e2e_predictions_step<k>.txt``: one output per line, in the dev
        file's MR order (the format of the official ``e2e-metrics`` script)."""
        path = run_dir(self.trainer) / f"e2e_predictions_step{self.trainer.global_step}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{text}\n" for text in texts), encoding="utf-8")
