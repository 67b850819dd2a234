"""Pretrained weights: every twin computes what its reference computes, key maps round-trip,
and ``model.pretrained`` loads from torchvision's cache, timm and local files (nothing is
downloaded: the references are randomly initialised)."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from classicnets.models import create_model, get_model_info, list_models
from classicnets.models.weights import (
    NO_TWIN,
    TWINS,
    PretrainedError,
    Twin,
    from_reference,
    preprocessing,
    pretrained_column,
    read_state_dict,
    to_reference,
)
from reference_nets import build_reference, fake_torchvision
from zoo_sizes import model_marks

CASES = [pytest.param(name, twin, marks=model_marks(name), id=f"{name}-{twin.source}")
         for name, ts in TWINS.items() for twin in ts]


def build_ours(name: str, twin: Twin | None = None, **kwargs: object) -> nn.Module:
    """Our network on the meta device, with the options ``twin``'s graph needs."""
    if twin is not None:
        params = inspect.signature(get_model_info(name).builder).parameters
        kwargs = {k: v[0] for k, v in twin.requires.items() if k in params} | kwargs
    with torch.device("meta"):
        return create_model(name, **kwargs)


@pytest.mark.parametrize(("name", "twin"), CASES)
def test_twin_gives_the_reference_logits_and_round_trips(name: str, twin: Twin) -> None:
    if twin.source == "timm":
        pytest.importorskip("timm")
    ref = build_reference(twin)
    ref_sd = ref.state_dict()
    ours = build_ours(name, twin)
    assert from_reference(ours, name, ref_sd, twin.source) == []
    ours.eval()
    size = get_model_info(name).input_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = ref(x), ours(x)
    scale = want.abs().max()
    assert scale > 0 and torch.isfinite(want).all()
    assert (got - want).abs().max() <= 1e-5 * scale, (got - want).abs().max() / scale

    # reverse: our state dict under the reference's names is the reference's state dict
    exported = to_reference(ours, name, twin.source)
    ref_only = twin.keymap.ref_only
    expected = {k for k in ref_sd if not (ref_only and re.match(ref_only, k))}
    assert set(exported) == expected
    for key, tensor in exported.items():
        assert tensor.shape == ref_sd[key].shape and torch.equal(tensor, ref_sd[key]), key
    result = ref.load_state_dict(exported, strict=not ref_only)
    assert all(re.match(ref_only, k) for k in result.missing_keys)


def test_every_network_has_a_twin_or_a_reason() -> None:
    names = set(list_models())
    assert set(TWINS) | set(NO_TWIN) == names
    assert not set(TWINS) & set(NO_TWIN)
    assert all(len(reason) > 20 for reason in NO_TWIN.values())
    assert pretrained_column("resnet50") == "torchvision `resnet50`"
    assert pretrained_column("lenet5") == "—"


@pytest.mark.parametrize("name", ["googlenet", "alexnet", "se_resnet18", "lenet5"])
def test_network_without_twin_refuses_with_the_reason(name: str) -> None:
    with pytest.raises(PretrainedError, match=re.escape(NO_TWIN[name][:30])):
        create_model(name, pretrained="torchvision")


def test_torchvision_source_downloads_through_the_weights_api(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ref_sd = fake_torchvision(monkeypatch, "resnet18")
    net = create_model("resnet18", pretrained="torchvision", num_classes=10)
    own = net.state_dict()
    assert torch.equal(own["stages.layer4.1.branch.conv2.0.weight"],
                       ref_sd["layer4.1.conv2.weight"])
    assert torch.equal(own["stem.0.1.running_var"], ref_sd["bn1.running_var"])
    assert net.fc.weight.shape == (10, 512)  # the head replaced for num_classes


def test_torchvision_cache_serves_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import get_model_weights

    weights = get_model_weights("squeezenet1_1").DEFAULT
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    ref_sd = build_reference(TWINS["squeezenet1_1"][0]).state_dict()
    torch.save(ref_sd, cache / weights.url.rsplit("/", 1)[-1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    net = create_model("squeezenet1_1", pretrained="torchvision")
    assert torch.equal(net.classifier[1].weight, ref_sd["classifier.1.weight"])


def _no_network(*args: object, **kwargs: object) -> None:
    raise OSError("no network in tests")


def test_failed_download_says_which_file_to_put_where(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    with pytest.raises(PretrainedError) as err:
        create_model("squeezenet1_0", pretrained="torchvision")
    msg = str(err.value)
    assert "squeezenet1_0-b66bff10.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg


def test_missing_file_says_where_and_which_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(PretrainedError) as err:
        create_model("resnet50", pretrained=str(path))
    msg = str(err.value)
    assert str(path) in msg and "resnet50-11ad3fa6.pth" in msg and "TORCH_HOME" in msg


@pytest.mark.parametrize("fmt", ["torchvision.pth", "ours.safetensors", "torchvision.safetensors",
                                 "ours.pth"])
def test_local_files_in_any_key_names(fmt: str, tmp_path: Path) -> None:
    keys, suffix = fmt.split(".")
    ref_sd = build_reference(TWINS["shufflenet_v2_x0_5"][0]).state_dict()
    if keys == "ours":
        donor = build_ours("shufflenet_v2_x0_5")
        from_reference(donor, "shufflenet_v2_x0_5", ref_sd, "torchvision")
        sd = donor.state_dict()
    else:
        sd = ref_sd
    path = tmp_path / f"w.{suffix}"
    if suffix == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save({"state_dict": sd}, path)
    net = create_model("shufflenet_v2_x0_5", pretrained=str(path), num_classes=3)
    assert torch.equal(net.state_dict()["stem.0.0.weight"], ref_sd["conv1.0.weight"])
    assert net.classifier.weight.shape == (3, 1024)
    assert read_state_dict(path).keys() == sd.keys()


def test_weights_refuse_a_network_they_do_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "r.pth"
    torch.save(build_reference(TWINS["resnet18"][0]).state_dict(), path)
    with pytest.raises(PretrainedError, match="data.image_size"):  # 32 px: the small stem
        create_model("resnet18", pretrained=str(path), input_size=32)
    with pytest.raises(PretrainedError, match="stride_in_1x1"):  # same shapes, v1 graph
        create_model("resnet50", pretrained="torchvision", stride_in_1x1=True)
    with pytest.raises(PretrainedError, match="not those of"):
        create_model("densenet121", pretrained=str(path))
    with pytest.raises(PretrainedError, match="neither a source"):
        create_model("resnet18", pretrained="imagenet")


def test_timm_source_without_timm_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(PretrainedError, match="pip install timm"):
        create_model("xception", pretrained="timm", bn_eps=1e-5)


def test_preprocessing_follows_the_weights() -> None:
    rn = preprocessing("resnet50", "torchvision")
    assert (rn.image_size, rn.resize_size, rn.mean) == (224, 232, (0.485, 0.456, 0.406))
    assert preprocessing("resnet50", "torchvision:IMAGENET1K_V1").resize_size == 256
    inc = preprocessing("inception_v3", "torchvision")
    assert (inc.image_size, inc.resize_size, inc.mean, inc.std) == (
        299, 342, (0.5,) * 3, (0.5,) * 3)
    assert preprocessing("vit_h_14", True).image_size == 518  # SWAG end-to-end weights


def test_timm_preprocessing_matches_timm() -> None:
    timm = pytest.importorskip("timm")
    for name, ts in TWINS.items():
        for twin in ts:
            if twin.source != "timm" or name == "preact_resnet152":  # no weights published
                continue
            cfg = timm.models.get_pretrained_cfg(timm.list_pretrained(twin.ref + ".*")[0])
            prep = preprocessing(name, "timm")
            assert prep.image_size == cfg.input_size[-1], name
            assert prep.resize_size == math.floor(prep.image_size / cfg.crop_pct), name
            assert (prep.mean, prep.std) == (tuple(cfg.mean), tuple(cfg.std)), name
            assert prep.interpolation == cfg.interpolation, name
