"""A method's options are its dataclass's fields: one spelling, read strictly.

Real Hydra composition of the real conf/ tree, real backbones (tiny-bert's random init),
real ``python train.py`` processes for the command-line errors.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import ConfigCompositionException

from mole_lightning.errors import ConfigError
from mole_lightning.methods import METHODS, build_encoder, method_config
from mole_lightning.methods.molex import MolexConfig
from mole_lightning.models.backbone import load_backbone
from mole_lightning.models.config_store import register_conf
from mole_lightning.models.heads import HeadConfig
from mole_lightning.utils.structured import dataclass_from_node
from tests.conftest import CONF_DIR, compose, run_cli


@dataclasses.dataclass
class MolexWithGain(MolexConfig):
    """MoLEx with one more option, as a developer would add it to ``MolexConfig``."""

    router_gain: float = 1.5


@pytest.fixture
def molex_with_gain(monkeypatch):
    """``method=molex`` reads ``MolexWithGain``; the real options come back afterwards."""
    monkeypatch.setitem(
        METHODS, "molex", dataclasses.replace(METHODS["molex"], config_cls=MolexWithGain)
    )
    register_conf()
    yield
    monkeypatch.undo()
    register_conf()


def built_gain(cfg) -> float:
    """The option as the built MoLEx routing module holds it."""
    encoder = build_encoder(load_backbone(cfg.backbone), cfg.method, cfg.backbone)
    return encoder.parts["molex"].cfg.router_gain


def test_a_field_added_to_a_methods_dataclass_reaches_the_built_module(
    molex_with_gain, tmp_path: Path
) -> None:
    """The new field's default reaches the composed config and the module; a command-line
    override and a value in the method's YAML file reach it too. Nothing else changes."""
    base = ["method=molex", "backbone=tiny-bert", "task=rte"]
    cfg = compose(base, tmp_path)
    assert cfg.method.router_gain == 1.5
    assert built_gain(cfg) == 1.5
    assert built_gain(compose([*base, "method.router_gain=2.5"], tmp_path)) == 2.5
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    with (conf / "method" / "molex.yaml").open("a") as f:
        f.write("router_gain: 4.0\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        from_yaml = hydra_compose("train.yaml", [*base, f"paths.output_dir={tmp_path}"])
    assert built_gain(from_yaml) == 4.0


def test_molex_reads_its_base_methods_options_from_their_dataclasses(tmp_path: Path) -> None:
    """MoLEx's LoRA and adapter options are ``LoraConfig``'s and ``AdapterConfig``'s
    fields (inherited, defaults written once), in its composed node and its dataclass."""
    from mole_lightning.methods.adapter import AdapterConfig
    from mole_lightning.methods.lora import LoraConfig

    cfg = compose(["method=molex"], tmp_path)
    config = method_config(cfg.method)
    base_fields = {
        f.name: f.default for cls in (LoraConfig, AdapterConfig) for f in dataclasses.fields(cls)
    }
    for name in base_fields.keys() - {"name", "lr"}:
        assert cfg.method[name] == getattr(config, name) == base_fields[name], name
    assert (config.name, config.base, cfg.optim.lr) == ("molex", "lora", 5.0e-4)
    adapter = method_config(compose(["method=molex", "method.base=adapter"], tmp_path).method)
    assert adapter.bottleneck == AdapterConfig.bottleneck


@pytest.mark.parametrize(
    "overrides, match",
    [
        (
            ["method=adapter", "+method.bottlenek=8"],
            r"method\.bottlenek: no such option of method=adapter; valid: bottleneck, dropout, "
            r"layer_norm, lr, name, scaling, zero_down_bias",
        ),
        (
            ["method=mole", "+method.prune.retrain_phase.epocs=3"],
            r"method\.prune\.retrain_phase\.epocs: no such option of method=mole; valid: "
            r"batch_size, epochs, warmup_ratio",
        ),
        (
            ["method=lora", "method.r=abc"],
            r"method\.r='abc': Value 'abc' of type 'str' could not be converted to Integer",
        ),
        (["method=mole", "method.structure=[mlp]"], r"method\.structure"),
        (["method=mole", "method.word_pooling=max"], r"mole\.word_pooling='max'; valid"),
        (["method=molex", "method.base=mole"], r"molex\.base='mole' is not one of lora"),
    ],
)
def test_unknown_or_mistyped_options_are_config_errors(
    overrides: list[str], match: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=match):
        method_config(compose(overrides, tmp_path).method)


def test_head_options_are_read_the_same_way(tmp_path: Path) -> None:
    assert dataclass_from_node(HeadConfig, compose([], tmp_path).head, "head") == HeadConfig()
    with pytest.raises(ConfigError, match=r"head\.dropot: no such option of head=HeadConfig"):
        dataclass_from_node(HeadConfig, compose(["+head.dropot=0.2"], tmp_path).head, "head")
    with pytest.raises(ConfigError, match=r"head\.pooling='cls' is not a head pooling"):
        dataclass_from_node(HeadConfig, compose(["head.pooling=cls"], tmp_path).head, "head")


def test_a_key_no_option_file_has_is_refused_by_hydra(tmp_path: Path) -> None:
    """Without ``+`` Hydra itself refuses a key the composed node lacks, naming it."""
    with pytest.raises(ConfigCompositionException, match=r"method\.bottlenek"):
        compose(["method=adapter", "method.bottlenek=8"], tmp_path)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "+method.bottlenek=8",
            "error: method.bottlenek: no such option of method=adapter; valid: bottleneck,",
        ),
        (
            "method.bottleneck=abc",
            "error: method.bottleneck='abc': Value 'abc' of type 'str' could not be "
            "converted to Integer",
        ),
    ],
)
def test_train_py_stops_on_a_bad_method_option(
    override: str, message: str, glue_dir: Path, tmp_path: Path
) -> None:
    """``python train.py``: exit status 2, one ``error:`` line naming the option, no
    traceback, and the run recorded as failed with that error, before any training."""
    run = tmp_path / "run"
    result = run_cli(
        [
            "train.py",
            "task=rte",
            "method=adapter",
            override,
            "backbone=tiny-bert",
            f"data.dir={glue_dir}",
            "trainer=cpu",
            "logger=csv",
            f"hydra.run.dir={run}",
        ]
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    info = json.loads((run / "run_info.json").read_text())
    assert info["status"] == "failed"
    assert info["error"].startswith("ConfigError: " + message.removeprefix("error: "))
    assert not (run / "checkpoints").exists()
