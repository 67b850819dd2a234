"""The recipe group (conf/recipe/) holds the published hyperparameters of each modern recipe,
its experiments compose and cite their sources, and a recipe trains end to end."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from classicnets.checkpoints import load_file
from classicnets.data import ImageDataModule
from classicnets.inference.predict import load_trained
from classicnets.runs.pipeline import evaluate
from conftest import compose_config

REPO = Path(__file__).resolve().parents[1]

TV = ("torchvision: Vryniotis, 'How to Train State-Of-The-Art Models Using TorchVision's Latest "
      "Primitives' (PyTorch blog, 2021) and references/classification/README.md, ResNet")
DEIT = "DeiT: Touvron et al., ICML 2021, Table 9, and facebookresearch/deit main.py defaults"
RSB = "ResNet strikes back: Wightman, Touvron & Jegou, arXiv:2110.00476 (2021), Table 1"
TIMM04 = "timm 0.4 train.py defaults kept by the RSB runs (--warmup-lr 1e-4, --min-lr 1e-6)"
LEE = "Lee, Lee & Song, arXiv:2112.13492 (2021) §4.1 and SPT_LSA_ViT main.py"

# torchvision's EMA decay is per image, scaled to one update of model_ema_steps × batch images
# over the epochs: alpha = (1 - 0.99998) × 1024 × 32 / 600
TV_EMA_DECAY = 1 - (1 - 0.99998) * 1024 * 32 / 600

# (recipe, key, published value, source); keys at ImageNet size (data=imagenet, 224 px)
PUBLISHED: list[tuple[str, str, Any, str]] = [
    ("torchvision_v2", "trainer.max_epochs", 600, TV),
    ("torchvision_v2", "data.batch_size", 8 * 128, TV),
    ("torchvision_v2", "optimizer._target_", "torch.optim.SGD", TV),
    ("torchvision_v2", "optimizer.lr", 0.5, TV),
    ("torchvision_v2", "optimizer.momentum", 0.9, TV),
    ("torchvision_v2", "optimizer.weight_decay", 2e-5, TV),
    ("torchvision_v2", "module.no_weight_decay_norm_bias", "norm", TV + " (norm_weight_decay=0)"),
    ("torchvision_v2", "scheduler.name", "cosine", TV),
    ("torchvision_v2", "scheduler.warmup_epochs", 5, TV),
    ("torchvision_v2", "scheduler.warmup_start_factor", 0.01, TV + " (lr_warmup_decay)"),
    ("torchvision_v2", "scheduler.min_lr", 0.0, TV),
    ("torchvision_v2", "module.label_smoothing", 0.1, TV),
    ("torchvision_v2", "module.loss", "cross_entropy", TV),
    ("torchvision_v2", "module.mixup.mixup_alpha", 0.2, TV),
    ("torchvision_v2", "module.mixup.cutmix_alpha", 1.0, TV),
    ("torchvision_v2", "module.mixup.prob", 1.0, TV + " (RandomChoice of MixUp, CutMix)"),
    ("torchvision_v2", "module.mixup.switch_prob", 0.5, TV),
    ("torchvision_v2", "data.policy", "trivialaugment", TV + " (ta_wide)"),
    ("torchvision_v2", "data.random_erasing", 0.1, TV),
    ("torchvision_v2", "data.repeated_augmentation", 4, TV + " (ra_reps)"),
    ("torchvision_v2", "data.train_crop_size", 176, TV),
    ("torchvision_v2", "data.resize_size", 232, TV),
    ("torchvision_v2", "data.image_size", 224, TV + " (val_crop_size)"),
    ("torchvision_v2", "callbacks.ema.update_every_n_steps", 32, TV + " (model_ema_steps)"),
    ("torchvision_v2", "callbacks.ema.decay", TV_EMA_DECAY, TV + " (model_ema_decay 0.99998)"),
    ("torchvision_v2", "callbacks.ema.start_epoch", 5, TV + " (EMA reset during warm-up)"),
    ("deit", "trainer.max_epochs", 300, DEIT),
    ("deit", "data.batch_size", 1024, DEIT),
    ("deit", "optimizer._target_", "torch.optim.AdamW", DEIT),
    ("deit", "optimizer.lr", 5e-4 * 1024 / 512, DEIT + " (lr = 5e-4 × batch / 512)"),
    ("deit", "optimizer.weight_decay", 0.05, DEIT),
    ("deit", "optimizer.eps", 1e-8, DEIT),
    ("deit", "module.no_weight_decay_norm_bias", True, DEIT + " (timm's no_weight_decay)"),
    ("deit", "scheduler.name", "cosine", DEIT),
    ("deit", "scheduler.warmup_epochs", 5, DEIT),
    ("deit", "scheduler.warmup_start_factor", 1e-6 / 1e-3, DEIT + " (warmup_lr 1e-6)"),
    ("deit", "scheduler.min_lr", 1e-5, DEIT),
    ("deit", "module.label_smoothing", 0.1, DEIT),
    ("deit", "module.mixup.mixup_alpha", 0.8, DEIT),
    ("deit", "module.mixup.cutmix_alpha", 1.0, DEIT),
    ("deit", "module.mixup.prob", 1.0, DEIT),
    ("deit", "module.mixup.switch_prob", 0.5, DEIT),
    ("deit", "data.policy", "randaugment", DEIT + " (rand-m9-mstd0.5-inc1)"),
    ("deit", "data.policy_options.num_ops", 2, DEIT),
    ("deit", "data.policy_options.magnitude", 9, DEIT),
    ("deit", "data.policy_options.num_magnitude_bins", 11, DEIT + " (timm's levels: m/10)"),
    ("deit", "data.policy_options.magnitude_std", 0.5, DEIT),
    ("deit", "data.random_erasing", 0.25, DEIT),
    ("deit", "data.repeated_augmentation", 3, DEIT),
    ("deit", "callbacks.ema.decay", 0.99996, DEIT + " (model_ema_decay)"),
    ("deit", "callbacks.ema.update_every_n_steps", 1, DEIT),
    ("deit_cifar", "trainer.max_epochs", 100, LEE),
    ("deit_cifar", "data.batch_size", 128, LEE),
    ("deit_cifar", "optimizer._target_", "torch.optim.AdamW", LEE),
    ("deit_cifar", "optimizer.lr", 1e-3, LEE),
    ("deit_cifar", "optimizer.weight_decay", 0.05, LEE),
    ("deit_cifar", "module.no_weight_decay_norm_bias", False, LEE + " (decay on all)"),
    ("deit_cifar", "scheduler.warmup_epochs", 10, LEE),
    ("deit_cifar", "module.label_smoothing", 0.1, LEE),
    ("deit_cifar", "data.policy", "autoaugment", LEE),
    ("deit_cifar", "data.policy_options.autoaugment_policy", "cifar10", LEE),
    ("deit_cifar", "module.mixup.mixup_alpha", 0.8, LEE),
    ("deit_cifar", "module.mixup.cutmix_alpha", 1.0, LEE),
    ("deit_cifar", "data.repeated_augmentation", 3, LEE),
    ("deit_cifar", "data.random_erasing", 0.25, LEE),
]
for _name, _epochs, _lr, _wd, _ls, _mix, _ra, _m, _train in (
        ("rsb_a1", 600, 5e-3, 0.01, 0.1, 0.2, 3, 7, None),
        ("rsb_a2", 300, 5e-3, 0.02, 0.0, 0.1, 3, 7, None),
        ("rsb_a3", 100, 8e-3, 0.02, 0.0, 0.1, 1, 6, 160)):
    PUBLISHED += [
        (_name, "trainer.max_epochs", _epochs, RSB),
        (_name, "data.batch_size", 2048, RSB),
        (_name, "optimizer._target_", "classicnets.training.optim.lamb", RSB + " (LAMB)"),
        (_name, "optimizer.lr", _lr, RSB),
        (_name, "optimizer.weight_decay", _wd, RSB),
        (_name, "module.no_weight_decay_norm_bias", True, RSB + " (timm's filter_bias_and_bn)"),
        (_name, "scheduler.name", "cosine", RSB),
        (_name, "scheduler.warmup_epochs", 5, RSB),
        (_name, "scheduler.warmup_start_factor", 1e-4 / _lr, TIMM04),
        (_name, "scheduler.min_lr", 1e-6, TIMM04),
        (_name, "module.label_smoothing", _ls, RSB),
        (_name, "module.loss", "bce", RSB),
        (_name, "module.bce_target_threshold", 0.2, RSB + " (timm --bce-target-thresh 0.2)"),
        (_name, "module.mixup.mixup_alpha", _mix, RSB),
        (_name, "module.mixup.cutmix_alpha", 1.0, RSB),
        (_name, "data.policy", "randaugment", RSB),
        (_name, "data.policy_options.magnitude", _m, RSB + f" (rand-m{_m}-mstd0.5)"),
        (_name, "data.policy_options.magnitude_std", 0.5, RSB),
        (_name, "data.policy_options.num_magnitude_bins", 11, RSB + " (timm's levels: m/10)"),
        (_name, "data.random_erasing", 0.0, RSB),
        (_name, "data.repeated_augmentation", _ra, RSB),
        (_name, "data.train_crop_size", _train, RSB + " (train resolution)"),
        (_name, "data.image_size", 224, RSB + " (test resolution)"),
        (_name, "data.resize_size", 235, RSB + " (test crop ratio 0.95: floor(224 / 0.95))"),
        (_name, "callbacks.ema", None, RSB + " (no EMA)"),
    ]


def _compose(*overrides: str, tmp: Path) -> Any:
    try:
        return compose_config(list(overrides), tmp)
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def recipes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("recipes")
    out = {}
    for name in sorted({r[0] for r in PUBLISHED}):
        data, model = (("cifar10", "vit_small_patch4_32") if name == "deit_cifar"
                       else ("imagenet", "resnet50"))
        out[name] = _compose(f"recipe={name}", f"model={model}", f"data={data}", tmp=tmp)
    return out


@pytest.mark.parametrize(("recipe", "key", "value", "source"), PUBLISHED,
                         ids=[f"{r}:{k}" for r, k, *_ in PUBLISHED])
def test_recipe_holds_the_published_value(recipes: dict[str, Any], recipe: str, key: str,
                                          value: Any, source: str) -> None:
    got = OmegaConf.select(recipes[recipe], key, default=None)
    if isinstance(value, float) and not isinstance(value, bool):
        assert got == pytest.approx(value, rel=1e-6), f"{recipe} {key}: {got} ({source})"
    else:
        assert got == value, f"{recipe} {key}: {got}, published {value} ({source})"


def test_recipe_paper_changes_nothing(tmp_path: Path) -> None:
    default = _compose("model=resnet50", "data=imagenet", tmp=tmp_path / "a")
    paper = _compose("model=resnet50", "data=imagenet", "recipe=paper", tmp=tmp_path / "b")
    none = _compose("model=resnet50", "data=imagenet", "~recipe", tmp=tmp_path / "c")

    def plain(cfg: Any) -> Any:  # the run directories differ; everything else must not
        tree = OmegaConf.to_container(cfg, resolve=False)
        return {k: v for k, v in tree.items() if k not in ("hydra", "paths")}

    assert plain(default) == plain(paper) == plain(none)
    assert default.hydra.runtime.choices.recipe == "paper"


@pytest.mark.parametrize(("data", "model"), [("cifar10", "resnet18"), ("digits", "lenet5"),
                                             ("imagenet", "vit_b_16")])
def test_recipes_compose_with_any_model_and_data(tmp_path: Path, data: str, model: str) -> None:
    for recipe in ("torchvision_v2", "rsb_a3"):
        cfg = _compose(f"recipe={recipe}", f"model={model}", f"data={data}", tmp=tmp_path)
        size = cfg.data.image_size
        # FixRes sizes at the recipe's ratio to the input size (176 : 232 : 224 at ImageNet)
        want = {"torchvision_v2": 176, "rsb_a3": 160}[recipe]
        assert cfg.data.train_crop_size == max(1, round(size * want / 224))
        assert cfg.model.name == model and cfg.data.name == data


EXPERIMENTS = {  # name: (model, recipe, the number it should reach, cited in its file)
    "resnet50_torchvision_v2": ("resnet50", "torchvision_v2", "80.858"),
    "deit_s_imagenet": ("vit_small_patch4_32", "deit", "79.8"),
    "deit_b_imagenet": ("vit_b_16", "deit", "81.8"),
    "resnet50_rsb_a1": ("resnet50", "rsb_a1", "80.4"),
    "resnet50_rsb_a2": ("resnet50", "rsb_a2", "79.8"),
    "resnet50_rsb_a3": ("resnet50", "rsb_a3", "78.1"),
    "vit_small_cifar10": ("vit_small_patch4_32", "deit_cifar", "93.6"),
}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiments_use_their_recipe_and_cite_the_target(tmp_path: Path, name: str) -> None:
    model, recipe, target = EXPERIMENTS[name]
    cfg = _compose(f"experiment={name}", tmp=tmp_path)
    assert cfg.model.name == model and cfg.hydra.runtime.choices.recipe == recipe
    text = (REPO / "conf" / "experiment" / f"{name}.yaml").read_text()
    assert f"{target} %" in text and "Expected" in text
    if name == "deit_s_imagenet":  # DeiT-S: 16-px patches at 224
        assert (cfg.model.patch_size, cfg.data.image_size) == (16, 224)
    if name in ("resnet50_rsb_a1", "resnet50_rsb_a2"):  # stochastic depth 0.05 (Table 1)
        assert cfg.model.survival_prob_last == pytest.approx(0.95)


def test_vit_small_cifar10_follows_its_source(tmp_path: Path) -> None:
    cfg = _compose("experiment=vit_small_cifar10", tmp=tmp_path)
    assert cfg.data.policy == "autoaugment" and cfg.data.policy_options.autoaugment_policy == (
        "cifar10")
    assert (cfg.module.mixup.mixup_alpha, cfg.module.mixup.cutmix_alpha) == (0.8, 1.0)
    assert (cfg.data.repeated_augmentation, cfg.data.random_erasing) == (3, 0.25)
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.data.batch_size) == (
        1e-3, 0.05, 128)
    assert (cfg.trainer.max_epochs, cfg.scheduler.warmup_epochs) == (100, 10)
    assert cfg.module.label_smoothing == 0.1 and cfg.model.drop_path_rate == 0.1


# the data-side keys of the recipes (augmentation policy, random erasing, repeated augmentation,
# FixRes) belong to the DataModule; a DataModule without them (this branch before the data side
# is merged) trains the recipe's training side alone
DATA_KEYS = ("policy", "policy_options", "random_erasing", "repeated_augmentation",
             "train_crop_size")


def test_a_cifar_scale_recipe_trains_end_to_end(tmp_path: Path) -> None:
    accepted = inspect.signature(ImageDataModule).parameters
    recipe = ["recipe=deit_cifar", "model=lenet5", "callbacks=ema"]
    cfg = _compose(*recipe, tmp=tmp_path / "compose")
    drop = [f"~data.{k}" for k in DATA_KEYS if k in cfg.data and k not in accepted]
    # the weights move in the two steps (no warm-up), and the average lags them
    args = [*recipe, "trainer.max_epochs=1", "scheduler.warmup_epochs=0", "optimizer.lr=0.01",
            "callbacks.ema.decay=0.5", "+trainer.limit_train_batches=2",
            "extras.print_config=false",
            "~callbacks.rich_progress_bar", "~callbacks.model_summary",
            "trainer.enable_progress_bar=false", *drop]
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "src" / "train.py"), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = list((tmp_path / "logs" / "train" / "runs").iterdir())
    result = json.loads((run / "metrics.json").read_text())
    metrics = result["metrics"]
    for key in ("train/acc", "val/acc", "val/acc_ema", "test/acc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    ckpt = load_file(result["best_checkpoint"])  # weights-only, with the average beside
    assert set(ckpt["ema"]["state_dict"]) == {k[len("net."):] for k in ckpt["state_dict"]
                                              if k.startswith("net.")}
    assert ckpt["hyper_parameters"]["mixup"]["mixup_alpha"] == 0.8
    # predict/export read either set of weights from it
    ema = load_trained(result["best_checkpoint"], weights="ema").model.net
    trained = load_trained(result["best_checkpoint"]).model.net
    for key, value in ema.state_dict().items():
        assert torch.equal(value, ckpt["ema"]["state_dict"][key]), key
    for key, value in trained.state_dict().items():
        assert torch.equal(value, ckpt["state_dict"][f"net.{key}"]), key
    assert any(not torch.equal(v, trained.state_dict()[k]) for k, v in ema.state_dict().items()
               if v.is_floating_point())
    with pytest.raises(ValueError, match="weights='best' is not one of model, ema"):
        load_trained(result["best_checkpoint"], weights="best")
    # the run tested its best checkpoint's average (test_weights=ema): eval with weights=ema
    # gets the same accuracy from the file
    cfg = compose_config([f"ckpt_path={result['best_checkpoint']}", "weights=ema",
                          "data=digits", "trainer.enable_progress_bar=false"],
                         tmp_path / "eval", config_name="eval")
    try:
        evaluated = evaluate(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert evaluated["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-7)


@pytest.mark.slow
def test_ema_under_ddp_is_the_same_on_every_rank(tmp_path: Path) -> None:
    args = ["trainer=ddp_sim", "callbacks=ema", "callbacks.ema.decay=0.9",
            "module.mixup.mixup_alpha=0.2", "module.mixup.cutmix_alpha=1.0",
            "trainer.max_epochs=1", "+trainer.limit_train_batches=3", "data.batch_size=64",
            "+callbacks.ema_probe._target_=ema_probe.EMAProbe",
            f"+callbacks.ema_probe.out_dir={tmp_path / 'probe'}",
            "extras.print_config=false", "~callbacks.rich_progress_bar",
            "~callbacks.model_summary", "trainer.enable_progress_bar=false"]
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(REPO / "src" / "train.py"), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / "probe" / f"ema-rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["updates"] == ranks[1]["updates"] == 3
    for key, value in ranks[0]["ema"].items():
        assert torch.equal(value, ranks[1]["ema"][key]), key
    # the average is not the trained weights (it lags them)
    assert any(not torch.equal(v, ranks[0]["net"][k]) for k, v in ranks[0]["ema"].items()
               if v.is_floating_point())
    (run,) = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert 0.0 <= json.loads((run / "metrics.json").read_text())["metrics"]["val/acc_ema"] <= 1


def test_an_unknown_recipe_lists_the_recipes(tmp_path: Path) -> None:
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match=r"(?s)recipe/fancy.*rsb_a1.*torchvision_v2"):
        _compose("recipe=fancy", tmp=tmp_path)
