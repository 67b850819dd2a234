"""Checks every registered network must pass, parametrised over the registry.

Family files (``test_<family>.py``) assert the exact parameter counts and paper details; here:
the registry/config correspondence, forward at small inputs (or the build-time refusal that
names the smallest size), gradients reaching every parameter, and the docstring citation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from classicnets.models import (
    ClassifierOutput,
    InputSizeError,
    create_model,
    get_model_info,
    list_models,
)
from zoo_sizes import model_marks

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


def _forward_backward(name: str, in_channels: int, size: int) -> None:
    try:
        model = create_model(name, num_classes=7, in_channels=in_channels, input_size=size)
    except InputSizeError as err:
        assert "smallest input size" in str(err)
        minimum = int(str(err).split("accepts is ")[1].split()[0])
        assert minimum > size
        return
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


@pytest.mark.parametrize("name", [_param(n) for n in MODELS])
def test_forward_backward_cifar_size(name: str) -> None:
    _forward_backward(name, 3, 32)


@pytest.mark.parametrize("name", [_param(n) for n in MODELS])
def test_forward_backward_mnist_size(name: str) -> None:
    _forward_backward(name, 1, 28)
