"""Every option of every config group composes, resolves and builds what it describes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from classicnets.training.optim import build_scheduler
from formats import write_tiny_shards

CONF = Path(__file__).resolve().parents[1] / "conf"
MakeCfg = Callable[..., DictConfig]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _resolve(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # raises on any dangling interpolation


def test_groups_have_the_documented_options() -> None:
    expected = {
        "data": {"digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "imagenet",
                 "imagefolder", "synthetic", "shards", "torchvision", "huggingface", "stl10",
                 "imagenette", "flowers102", "oxford_pets", "food101", "caltech101", "gtsrb",
                 "eurosat", "emnist", "kmnist", "dtd", "fgvc_aircraft"},
        "trainer": {"default", "cpu", "gpu", "mps", "ddp", "ddp_sim", "towers", "towers_sim"},
        "optimizer": {"sgd", "adam", "adamw", "rmsprop", "lamb", "lars"},
        "scheduler": {"cosine", "step", "multistep", "onecycle", "plateau", "none"},
        "logger": {"csv", "tensorboard", "wandb", "many"},
        "callbacks": {"default", "dashboard", "ema"},
        "recipe": {"paper", "torchvision_v2", "deit", "deit_cifar", "rsb_a1", "rsb_a2", "rsb_a3"},
        "debug": {"fdr", "overfit", "limit", "profiler"},
    }
    for group, names in expected.items():
        assert set(_options(group)) == names, group


def _parquet(tmp_path: Path) -> Path:
    from formats_hf import write_parquet

    return write_parquet(tmp_path / "tiny.parquet")


@pytest.mark.parametrize("name", _options("data"))
def test_data_options(name: str, make_cfg: MakeCfg, tmp_path: Path) -> None:
    extra = {"imagefolder": [f"data.path={tmp_path}"],
             # a dataset that needs no files, and a local Parquet file (no hub access)
             "torchvision": ["data.dataset=FakeData", "+data.options.size=20"],
             "huggingface": [f"data.name={_parquet(tmp_path)}",
                             f"data.cache_dir={tmp_path / 'hf'}"],
             # classes and sizes from the shards' manifest
             "shards": [f"data.path={write_tiny_shards(tmp_path / 'shards')}"]}.get(name, [])
    cfg = make_cfg(f"data={name}", *extra)
    _resolve(cfg)
    dm = instantiate(cfg.data)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (
        cfg.data.num_classes, cfg.data.in_channels, cfg.data.image_size)
    # the model group reads its shape from data
    assert cfg.model.num_classes == cfg.data.num_classes
    assert cfg.model.input_size == cfg.data.image_size


@pytest.mark.parametrize("name", _options("trainer"))
def test_trainer_options(name: str, make_cfg: MakeCfg) -> None:
    cfg = make_cfg(f"trainer={name}")
    resolved = _resolve(cfg)["trainer"]
    if name in ("gpu", "ddp"):
        assert resolved["precision"] == "bf16-mixed" and resolved["accelerator"] == "gpu"
    if name in ("ddp", "ddp_sim"):
        assert resolved["strategy"] == "ddp" and resolved["sync_batchnorm"] is True
    if name in ("towers", "towers_sim"):
        assert resolved["strategy"]["_target_"] == "classicnets.parallel.TowerStrategy"
    if name in ("default", "cpu", "ddp_sim", "towers_sim"):  # buildable on any machine
        trainer = instantiate(cfg.trainer, logger=False)
        assert trainer.max_epochs == cfg.trainer.max_epochs
        if name in ("ddp_sim", "towers_sim"):
            assert trainer.num_devices == 2


@pytest.mark.parametrize("opt", _options("optimizer"))
@pytest.mark.parametrize("sched", _options("scheduler"))
def test_optimizer_and_scheduler_options(opt: str, sched: str, make_cfg: MakeCfg) -> None:
    cfg = make_cfg(f"optimizer={opt}", f"scheduler={sched}")
    resolved = _resolve(cfg)
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = instantiate(resolved["optimizer"])(params=[param])
    assert isinstance(optimizer, torch.optim.Optimizer)
    out = build_scheduler(optimizer, resolved["scheduler"], total_steps=20, max_epochs=2)
    assert (out is None) == (sched == "none")


@pytest.mark.parametrize("name", _options("logger"))
def test_logger_options(name: str, make_cfg: MakeCfg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg(f"logger={name}")
    loggers = [instantiate(sub) for sub in cfg.logger.values()]
    # every choice keeps the CSV logger (the run's csv/metrics.csv and plots; issue 21)
    assert len(loggers) == {"many": 3, "csv": 1}.get(name, 2)
    assert "csv" in cfg.logger


def test_callbacks_default(make_cfg: MakeCfg) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    cfg = make_cfg()
    callbacks = [instantiate(sub) for sub in cfg.callbacks.values()]
    ckpt = next(c for c in callbacks if isinstance(c, ModelCheckpoint))
    assert ckpt.save_last and ckpt.monitor == "val/acc" and ckpt.mode == "max"
    from classicnets.callbacks import Dashboard

    dashboard = next(c for c in callbacks if isinstance(c, Dashboard))  # in default, by defaults
    assert not dashboard.log_grad_norm and dashboard.num_predictions == 32


def test_callbacks_ema_adds_the_average_and_picks_the_best_by_it(make_cfg: MakeCfg) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from classicnets.callbacks.ema import EMA

    callbacks = [instantiate(sub) for sub in make_cfg("callbacks=ema").callbacks.values()]
    ema = next(c for c in callbacks if isinstance(c, EMA))
    assert (ema.decay, ema.update_every_n_steps, ema.test_weights) == (0.9999, 1, "ema")
    ckpt = next(c for c in callbacks if isinstance(c, ModelCheckpoint))
    assert ckpt.monitor == "val/acc_ema" and ckpt.save_last  # the default ones, kept


@pytest.mark.parametrize("name", _options("debug"))
def test_debug_options(name: str, make_cfg: MakeCfg) -> None:
    cfg = make_cfg(f"debug={name}")
    assert cfg.task_name == "debug"
    _resolve(cfg)


@pytest.mark.parametrize("name", _options("experiment"))
def test_experiment_recipes_compose_and_build(name: str, make_cfg: MakeCfg,
                                              tmp_path: Path) -> None:
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_"), "experiments override the root config"
    assert "Expected" in text or "expected" in text, f"{name}: state the expected accuracy"
    extra = [f"data.path={tmp_path}"] if "imagefolder" in name else []
    cfg = make_cfg(f"experiment={name}", *extra)
    resolved = _resolve(cfg)
    assert resolved["task_name"] != "train", f"{name}: set task_name to the recipe's name"
    resolved["model"].pop("pretrained", None)  # nothing is downloaded here (tests/models/
    with torch.device("meta"):                 # test_weights.py covers the weights)
        net = instantiate(resolved["model"])
    assert sum(p.numel() for p in net.parameters()) > 0
    instantiate(resolved["optimizer"])(params=[torch.nn.Parameter(torch.zeros(1))])


def test_eval_config_composes(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("ckpt_path=x.ckpt", config_name="eval")
    assert cfg.task_name == "eval" and _resolve(cfg)["ckpt_path"] == "x.ckpt"


def test_env_example_lists_every_variable_the_configs_read() -> None:
    import re

    used = set()
    for path in CONF.rglob("*.yaml"):
        used |= set(re.findall(r"oc\.env:([A-Z_]+)", path.read_text()))
    listed = set(re.findall(r"^#?\s*([A-Z_]+)=", (CONF.parent / ".env.example").read_text(),
                            re.MULTILINE))
    assert used and used <= listed, f"missing from .env.example: {sorted(used - listed)}"
