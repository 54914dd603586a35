"""scripts/evaluate.py: a real short run evaluated on dev (equal to its metrics.json),
AdvGLUE (label mapping on hand-checked items) and perturbations (seeded), transfer
mappings, and the errors a user can act on."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mole_lightning.core.tasks import get_task
from mole_lightning.data.glue import GlueExample, read_glue_split
from mole_lightning.errors import ConfigError, DataFileError
from mole_lightning.evaluation.advglue import advglue_sets, read_advglue
from mole_lightning.evaluation.cli import evaluate, list_override
from mole_lightning.evaluation.perturb import PERTURBATIONS, perturb_examples
from mole_lightning.evaluation.predict import Predictions
from mole_lightning.evaluation.transfer import load_mapping, map_predictions
from mole_lightning.reporting import read_figure_info
from mole_lightning.train import train
from tests.conftest import CONF_DIR, compose, fast_run_overrides


def compose_eval(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="evaluate.yaml", overrides=overrides)


@pytest.fixture(scope="module")
def advglue_cfg(shared_data: Path):
    return compose_eval([f"shared_data={shared_data}", "eval=[advglue]"]).suites.advglue


def test_advglue_label_mapping_on_hand_checked_items(advglue_cfg) -> None:
    def label(name: str, idx: int) -> str:
        node = advglue_cfg.sets[name]
        example = read_advglue(advglue_cfg.file, name, node)[idx]
        return get_task(node.task).labels[example.label]

    # RTE 0: "Doctors Without Borders is an international aid organization." follows
    # from a text about MSF's work; RTE 1: "2.7 percent of the people infected with HIV
    # exist in Africa" does not follow from "over 2.7 million people are infected".
    assert (label("rte", 0), label("rte", 1)) == ("entailment", "not_entailment")
    # MNLI 0: "so golden [little] landfill space left ... going to run out" vs "We have
    # plenty of space in the landfill"; MNLI 1: "Bars and restaurants are pragmatic places".
    assert (label("mnli", 0), label("mnli", 1)) == ("contradiction", "neutral")
    # SST-2 0 is positive ("an uneven treat ... examining its significance"), SST-2 1
    # negative ("waste the talents of robert forster ..."); QQP 0 is not a duplicate.
    assert (label("sst2", 0), label("sst2", 1), label("qqp", 0)) == ("1", "0", "0")
    assert label("mnli-mm", 0) == "entailment"
    reversed_node = OmegaConf.merge(
        advglue_cfg.sets.rte, {"labels": ["not_entailment", "entailment"]}
    )
    assert read_advglue(advglue_cfg.file, "rte", reversed_node)[0].label == 1  # the mapping is used


def test_advglue_errors_name_what_is_missing(advglue_cfg, tmp_path: Path) -> None:
    assert advglue_sets("mnli", advglue_cfg.sets) == ["mnli", "mnli-mm"]
    with pytest.raises(ConfigError, match="no set for task 'cola'.*eval=dev,perturb"):
        advglue_sets("cola", advglue_cfg.sets)
    with pytest.raises(DataFileError, match="AdvGLUE file not found"):
        read_advglue(tmp_path / "dev.json", "rte", advglue_cfg.sets.rte)
    bad = OmegaConf.merge(advglue_cfg.sets.rte, {"labels": ["entailment", "contradiction"]})
    with pytest.raises(ConfigError, match="not labels of task 'rte'"):
        read_advglue(advglue_cfg.file, "rte", bad)


EXAMPLES = [
    GlueExample("The quick brown fox jumps over the lazy dog .", "A fox is quick .", 0),
    GlueExample("it 's a charming and often affecting journey .", None, 1),
]


@pytest.mark.parametrize("kind", list(PERTURBATIONS))
def test_perturbations_are_reproducible_for_a_seed(kind: str) -> None:
    first = perturb_examples(EXAMPLES * 20, kind, 0.3, seed=7)
    assert first == perturb_examples(EXAMPLES * 20, kind, 0.3, seed=7)
    assert first != perturb_examples(EXAMPLES * 20, kind, 0.3, seed=8)
    assert perturb_examples(EXAMPLES, kind, 0.0, seed=7) == EXAMPLES
    assert [e.label for e in first] == [e.label for e in EXAMPLES * 20]
    assert all(e.text_b is None for e in first[1::2])
    # a row's perturbation does not depend on the rows built before it
    assert perturb_examples(EXAMPLES * 20, kind, 0.3, seed=7)[5] == first[5]


def test_perturbation_kinds_do_what_they_say() -> None:
    text = EXAMPLES[0].text_a
    words = text.split()
    rng = random.Random(0)
    assert sorted(PERTURBATIONS["swap"](text, 0.5, rng).split()) == sorted(words)
    dropped = PERTURBATIONS["dropout"](text, 0.5, rng).split()
    assert 1 <= len(dropped) < len(words) and all(w in words for w in dropped)
    assert PERTURBATIONS["dropout"]("word", 1.0, rng) == "word"
    typos = PERTURBATIONS["typo"](text, 1.0, rng)
    assert typos != text and typos.split(" ")[-1] == "."  # punctuation untouched
    with pytest.raises(ConfigError, match="unknown perturbation"):
        perturb_examples(EXAMPLES, "shuffle", 0.1, 0)


def test_transfer_mappings() -> None:
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    mnli, rte = get_task("mnli"), get_task("rte")
    to_rte = map_predictions(load_mapping("mnli", "rte"), mnli, rte, Predictions(logits, None, 8))
    assert [rte.labels[i] for i in to_rte] == ["entailment", "not_entailment", "not_entailment"]
    stsb, mrpc = get_task("stsb"), get_task("mrpc")
    scores = Predictions(torch.tensor([4.2, 3.0, 1.1]), None, 8)
    assert map_predictions(load_mapping("stsb", "mrpc"), stsb, mrpc, scores).tolist() == [1, 1, 0]
    probs = Predictions(torch.tensor([[0.0, 0.0], [0.0, 2.0]]), None, 8)
    similarity = map_predictions(load_mapping("mrpc", "stsb"), mrpc, stsb, probs)
    assert torch.allclose(similarity, torch.tensor([2.5, 5 * torch.sigmoid(torch.tensor(2.0))]))
    for pair in (("qqp", "mrpc"), ("mrpc", "qqp")):
        load_mapping(*pair)
    with pytest.raises(
        ConfigError, match="no transfer mapping from 'sst2' to 'cola': add .*sst2_to_cola.yaml"
    ):
        load_mapping("sst2", "cola")


def test_list_override() -> None:
    assert list_override(["ckpt_path=x", "eval=dev,advglue"]) == [
        "ckpt_path=x",
        "eval=[dev,advglue]",
    ]
    assert list_override(["eval=dev"]) == ["eval=dev"]
    assert list_override(["-m", "eval=dev,advglue"]) == ["-m", "eval=dev,advglue"]


def test_evaluate_dev_equals_metrics_json_and_writes_suites(
    glue_dir: Path, shared_data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """A real short MiniLM + LoRA run on RTE (full dev set), evaluated from its last.ckpt;
    the transfer suite through an identity mapping reproduces the dev accuracy."""
    overrides = [o for o in fast_run_overrides(glue_dir, "rte") if "limit_val_batches" not in o]
    run_dir = tmp_path / "run"
    cfg = compose(
        [
            *overrides,
            "data.max_length=16",
            "data.eval_batch_size=64",
            "validate_best=false",
            "seed=0",
        ],
        run_dir,
        cache_dir,
    )
    train(cfg)
    recorded = json.loads((run_dir / "metrics.json").read_text())
    mappings = tmp_path / "mappings"  # an identity mapping: transfer must equal dev
    mappings.mkdir()
    (mappings / "rte_to_rte.yaml").write_text(
        "kind: labels\nlabels: {entailment: entailment, not_entailment: not_entailment}\n"
    )
    eval_cfg = compose_eval(
        [
            f"ckpt_path={run_dir}/checkpoints/last.ckpt",
            f"shared_data={shared_data}",
            "eval=[dev,advglue,perturb,transfer]",
            "suites.perturb.kinds=[typo]",
            "suites.perturb.rates=[0.0,0.2]",
            "suites.transfer.targets=[rte]",
            f"suites.transfer.mappings_dir={mappings}",
            "device=cpu",
        ]
    )
    results = {r.name: r for r in evaluate(eval_cfg)}
    assert results["dev"].metrics["val/acc"] == recorded["val/acc"]
    dev = json.loads((run_dir / "eval_dev.json").read_text())
    assert dev["rows"][0]["equal"] is True and dev["task"] == "rte" and dev["method"] == "lora"
    adv = json.loads((run_dir / "eval_advglue.json").read_text())["rows"][0]
    assert adv["set"] == "rte" and adv["n"] == 81
    assert adv["drop"] == pytest.approx(recorded["val/acc"] - adv["acc"])
    # always answering one class: the label shares of the AdvGLUE set and of the dev set
    advglue = json.loads((shared_data / "advglue" / "dev.json").read_text())["rte"]
    entailment = sum(item["label"] == 0 for item in advglue)  # AdvGLUE's RTE id 0
    assert (adv["const_entailment"], adv["const_not_entailment"]) == pytest.approx(
        (entailment / 81, 1 - entailment / 81)
    )
    dev_labels = [e.label for e in read_glue_split(get_task("rte"), "validation", glue_dir)]
    dev_share = dev_labels.count(0) / len(dev_labels)
    assert adv["clean_const_entailment"] == pytest.approx(dev_share)
    assert results["advglue"].metrics["advglue/rte/const/not_entailment"] == pytest.approx(
        1 - entailment / 81
    )
    perturb = (run_dir / "eval_perturb.csv").read_text().splitlines()
    assert perturb[0].startswith("kind,p,n,acc,drop") and len(perturb) == 3
    figure = read_figure_info(run_dir / "eval_perturb.png")
    assert figure["titles"][0].startswith("rte lora: dev under perturbations")
    assert figure["labels"] == ["typo"]  # one line per kind
    assert results["perturb"].rows[0]["acc"] == recorded["val/acc"]  # p = 0 is clean dev
    assert results["transfer_rte"].metrics == pytest.approx(
        {
            "transfer/rte/acc": recorded["val/acc"],
            "transfer/rte/const/entailment": dev_share,
            "transfer/rte/const/not_entailment": 1 - dev_share,
        }
    )
    transfer = json.loads((run_dir / "eval_transfer_rte.json").read_text())
    assert transfer["settings"]["targets"] == ["rte"]
    assert (run_dir / "eval_transfer_rte.csv").is_file()


def test_evaluate_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such checkpoint file or run directory"):
        evaluate(compose_eval([f"ckpt_path={tmp_path}/missing"]))
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match=r"no checkpoints/best-\*.ckpt or checkpoints/last.ckpt"):
        evaluate(compose_eval([f"ckpt_path={tmp_path}"]))


def test_collect_aggregates_suite_files_across_seeds(tmp_path: Path) -> None:
    from mole_lightning.analysis import find_runs
    from mole_lightning.evaluation.collect import suite_table
    from tests.test_collect import write_run

    root = tmp_path / "multirun"
    for seed, acc in ((1, 0.5), (2, 0.7)):
        run = write_run(root, f"rte_lora_{seed}", "rte", "lora", seed, 0.8)
        metrics = {"advglue/rte/acc": acc, "advglue/rte/drop": 0.8 - acc}
        (run / "eval_advglue.json").write_text(json.dumps({"metrics": metrics}))
    write_run(root, "rte_molex_1", "rte", "molex", 1, 0.8)
    markdown, csv_text = suite_table(find_runs(root), "advglue", ("advglue/*/acc",))
    assert "| lora | 60.0 ± 14.1 (n=2) |" in markdown
    assert "eval=advglue" in markdown and "rte_molex_1" in markdown
    assert (
        csv_text.splitlines()[0]
        == "method,rte advglue/rte/acc_mean,rte advglue/rte/acc_std,rte advglue/rte/acc_n"
    )


def test_graph_methods_parse_eval_data_into_the_training_graph_cache(tmp_path: Path) -> None:
    """Evaluation examples of a graph method go through GraphStore under
    paths.cache_dir/graphs (parsed once, then only loaded), and batches carry word graphs."""
    from mole_lightning.evaluation.data import ExamplesDataModule

    cfg = compose(["task=rte", "backbone=minilm", "parser=spacy", "data.num_workers=0"])
    examples = perturb_examples([EXAMPLES[0]] * 3, "typo", 0.2, seed=0)

    def loader():
        dm = ExamplesDataModule(
            "advglue-rte",
            examples,
            "rte",
            cfg.data,
            cfg.backbone,
            tmp_path,
            parser=cfg.parser,
            graph_kinds=["syntactic"],
        )
        dm.prepare_data()
        dm.setup("validate")
        return dm.val_dataloader()[0]

    batch = next(iter(loader()))
    assert batch["word_graphs"].num_words.tolist()[0] > 5
    cached = sorted((tmp_path / "graphs").glob("eval-advglue-rte-*.npz"))
    assert [p.name.split(".")[0][-6:] for p in cached] == ["text_a", "text_b"]
    stamps = [p.stat().st_mtime_ns for p in cached]
    loader()  # a second evaluation parses nothing
    assert [p.stat().st_mtime_ns for p in cached] == stamps
