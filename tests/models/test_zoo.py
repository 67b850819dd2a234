"""Checks every registered network must pass, parametrised over the registry.

Family files (``test_<family>.py``) assert the exact parameter counts and paper details; here:
the registry/config correspondence, the docstring citation, one pass over the zoo that trains a
step of every network through conf/ and Lightning at MNIST's shape and runs it at CIFAR's (or
the build-time refusal that names the smallest size), gradients reaching every parameter, and
the forward at each network's canonical size.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from classicnets.models import (
    ClassifierOutput,
    InputSizeError,
    create_model,
    get_model_info,
    list_models,
)
from classicnets.models.attention import BoTNet
from classicnets.runs.pipeline import train
from zoo_probe import ZooProbe
from zoo_sizes import BIG_MODELS, canonical_params, model_marks

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
MODELS = list_models()


def _param(name: str) -> object:
    marks = model_marks(name)
    return pytest.param(name, marks=marks, id=name)


def test_registry_and_configs_are_one_to_one() -> None:
    files = {p.stem for p in CONF.glob("*.yaml")}
    assert set(MODELS) == files, (
        f"registered without config: {sorted(set(MODELS) - files)}; "
        f"config without model: {sorted(files - set(MODELS))}"
    )


@pytest.mark.parametrize("name", MODELS)
def test_config_builds_the_registered_name(name: str) -> None:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    assert cfg._target_ == "classicnets.models.create_model"
    assert cfg.name == name
    for key, ref in (
        ("num_classes", "${data.num_classes}"),
        ("in_channels", "${data.in_channels}"),
        ("input_size", "${data.image_size}"),
    ):
        assert OmegaConf.to_container(cfg)[key] == ref, f"{name}.yaml: {key} must be {ref}"
    # every option the YAML lists must be a real builder argument
    opts = {k: v for k, v in OmegaConf.to_container(cfg).items() if not str(v).startswith("${")}
    opts.pop("_target_"), opts.pop("name")
    with torch.device("meta"):
        create_model(name, **opts)


@pytest.mark.parametrize("name", MODELS)
def test_docstring_cites_the_paper(name: str) -> None:
    info = get_model_info(name)
    assert info.paper and 1950 < info.year < 2030
    with torch.device("meta"):
        model = create_model(name)
    doc = type(model).__doc__ or ""
    assert str(info.year) in doc or info.paper.split(":")[0][:30] in doc, (
        f"{type(model).__name__} docstring must cite {info.paper} ({info.year})"
    )
    assert info.builder.__doc__, f"builder {name} needs a docstring"


def _refused(err: InputSizeError, size: int) -> None:
    """A network may refuse a size it cannot take, at build time, naming the smallest it takes."""
    assert "smallest input size" in str(err)
    minimum = int(str(err).split("accepts is ")[1].split()[0])
    assert minimum > size


def _assert_forward_backward(model: nn.Module, in_channels: int, size: int) -> None:
    model.train()
    x = torch.randn(2, in_channels, size, size)
    out = model(x)
    logits = out.logits if isinstance(out, ClassifierOutput) else out
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    loss = logits.sum()
    if isinstance(out, ClassifierOutput):
        loss = loss + sum(a.sum() for a in out.aux_logits)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reached: {missing[:5]}"
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)


def _forward_backward(name: str, in_channels: int, size: int) -> None:
    try:
        model = create_model(name, num_classes=7, in_channels=in_channels, input_size=size)
    except InputSizeError as err:
        _refused(err, size)
        return
    _assert_forward_backward(model, in_channels, size)


def _same_build(net: nn.Module, name: str, in_channels: int, size: int) -> bool:
    """Whether ``name`` built for ``size`` px is ``net``: the same modules, options and parameter
    shapes, i.e. its small-input adaptation does not tell the two sizes apart."""
    try:
        with torch.device("meta"):
            other = create_model(name, num_classes=7, in_channels=in_channels, input_size=size)
    except InputSizeError:
        return False
    shapes = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
    return repr(other) == repr(net) and shapes == [
        (k, tuple(v.shape)) for k, v in other.state_dict().items()]


MakeCfg = Callable[..., DictConfig]
# debug=fdr: one training batch, one validation and one test batch; no callbacks, loggers or
# checkpoints (nothing is written)
FDR = ("debug=fdr", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false")
STEP = (1, 28)  # the training step: MNIST's shape (grey, 28 px, an odd map after 2 halvings)
OTHER = 32  # and CIFAR's side


def _train_step(make_cfg: MakeCfg, name: str, in_channels: int, size: int
                ) -> tuple[dict[str, float], ZooProbe, DictConfig]:
    cfg = make_cfg(f"model={name}", "data=synthetic", "data.num_samples=16", "data.batch_size=4",
                   "data.num_classes=7", f"data.in_channels={in_channels}",
                   f"data.image_size={size}", *FDR)
    # the network's config takes its classes, channels and side from whatever data is chosen
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert (model["num_classes"], model["in_channels"], model["input_size"]) == (
        7, in_channels, size)
    with open_dict(cfg):
        cfg.callbacks = {"zoo": {"_target_": "zoo_probe.ZooProbe"}}
    try:
        _, metrics = train(cfg)
    except BaseException:
        if ZooProbe.last is not None:
            ZooProbe.last.release()
        raise
    probe = ZooProbe.last
    assert probe is not None
    return metrics, probe, cfg


@pytest.mark.parametrize("name", [_param(n) for n in MODELS])
def test_network_trains_a_step_and_runs_at_both_small_sizes(name: str, make_cfg: MakeCfg
                                                           ) -> None:
    """The one pass over the zoo: ``model=<name>`` composed with the data's shape, one real
    training step through the Lightning module and Trainer (then a validation and a test
    batch) at 1×28×28, gradients reaching every parameter, the auxiliary heads in training
    mode only; then forward and backward at 32 px, on the same network where the 32-px
    build is the same one, else on a fresh 3×32×32 build."""
    channels, size = STEP
    try:
        metrics, probe, cfg = _train_step(make_cfg, name, channels, size)
    except InputSizeError as err:  # none today; a network that needs more takes 32 px
        _refused(err, size)
        channels, size = 3, OTHER
        metrics, probe, cfg = _train_step(make_cfg, name, channels, size)
    net = probe.release()
    assert net is not None
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()
    assert {"train/loss", "test/acc"} <= set(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert probe.no_grad is not None, "no backward ran"
    assert not probe.no_grad, f"no gradient reached: {probe.no_grad[:5]}"
    trained = [o for o in probe.outputs if o.training]
    evaluated = [o for o in probe.outputs if not o.training]
    assert trained and evaluated
    for o in trained:
        assert o.shape == (4, 7) and o.finite
        assert all(a == (4, 7) for a in o.aux_shapes)
    for o in evaluated:  # no auxiliary heads outside training
        assert o.plain and o.shape[1:] == (7,)

    if size == OTHER:
        return
    if _same_build(net, name, channels, OTHER):
        net.zero_grad(set_to_none=True)  # the step's gradients must not count
        _assert_forward_backward(net, channels, OTHER)
    else:  # the adaptation to small inputs differs (a stem, a grid, a classifier's width)
        del net
        gc.collect()  # the training run's cycles: a huge network must not be held twice
        _forward_backward(name, 3, OTHER)


# ------------------------------------------------------------------ at the canonical size

# the options the family tests built at the canonical size: the auxiliary heads, and how many
CANONICAL_OPTIONS: dict[str, dict] = {"googlenet": {"aux_logits": True},
                                      "inception_v3": {"aux_logits": True}}
AUX_HEADS = {"googlenet": 2, "inception_v3": 1}
# untrained, in eval mode (unit running statistics), very deep residual networks may overflow
# legitimately; these are checked finite in training mode only
EVAL_MAY_OVERFLOW = {"resnet", "preact_resnet", "senet", "cbam_resnet"}


def _squeezenet(model: nn.Module, scores: torch.Tensor) -> None:
    assert (scores >= 0).all()  # conv10 is followed by ReLU before the average pool


def _nin(model: nn.Module, scores: torch.Tensor) -> None:
    # global average pooling of the last convolution's maps, no fully connected layer
    assert scores.shape == (1, model.features[-1].out_channels)


def _botnet(model: nn.Module, scores: torch.Tensor) -> None:
    assert isinstance(model, BoTNet)


FAMILY_CHECKS: dict[str, Callable[[nn.Module, torch.Tensor], None]] = {
    "squeezenet": _squeezenet, "nin": _nin, "attention": _botnet}
FAST_CANONICAL = 10_000_000  # parameters; larger canonical networks are in the slow tier


def _canonical_param(name: str) -> object:
    marks = model_marks(name)
    if name not in BIG_MODELS and canonical_params(name) > FAST_CANONICAL:
        marks.append(pytest.mark.slow)
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", [_canonical_param(n) for n in MODELS])
def test_forward_at_canonical_size(name: str) -> None:
    info = get_model_info(name)
    model = create_model(name, **CANONICAL_OPTIONS.get(name, {}))
    x = torch.randn(2, info.in_channels, info.input_size, info.input_size)
    with torch.no_grad():
        # training-mode BN normalises with batch statistics
        out = model.train()(x)
        logits = out.logits if isinstance(out, ClassifierOutput) else out
        assert logits.shape == (2, info.num_classes) and torch.isfinite(logits).all()
        if name in AUX_HEADS:
            assert isinstance(out, ClassifierOutput)
            assert [tuple(a.shape) for a in out.aux_logits] == [
                (2, info.num_classes)] * AUX_HEADS[name]
        scores = model.eval()(x[:1])
    assert isinstance(scores, torch.Tensor) and scores.shape == (1, info.num_classes)
    if info.family not in EVAL_MAY_OVERFLOW:
        assert torch.isfinite(scores).all()
    FAMILY_CHECKS.get(info.family, lambda m, s: None)(model, scores)
