"""Export to ONNX and TorchScript: `src/export.py`, `classicnets.inference.export`.

One network of every family (the files of `classicnets/models/`) is traced to TorchScript; to
ONNX go the fewest of them that together use every operator the family representatives export
to (ONNX_COVER). The exported file must compute PyTorch's logits (within 1e-4 of max(1, |logit|))
at two batch sizes. Networks get a lively random state first: zero-initialised layers (ViT's head,
ResNets' last BN) random, BatchNorm statistics measured, so logits are not constant or tiny.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from classicnets.data.transforms import EvalTransform
from classicnets.inference.export import ExportError, export_model, load_exported, read_metadata
from classicnets.inference.predict import NormalizedClassifier, Trained, load_trained, predict_files
from classicnets.models import InputSizeError, create_model, get_model_info, list_models
from conftest import REPO
from trained import train_checkpoint

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(
    not HAS_ONNX, reason="ONNX export needs onnx, onnxscript and onnxruntime: "
                         "pip install -e '.[export]'")
TOLERANCE = 1e-4
# the smallest network of each family at 32 px; under a few seconds each through both exporters
FAMILIES = {
    "alexnet": "alexnet", "attention": "botnet50", "bn_inception": "bn_inception",
    "cbam_resnet": "cbam_resnet18", "densenet": "densenet_bc_100_k12", "googlenet": "googlenet",
    "highway": "highway_conv", "inception_v3": "inception_v3",
    "inception_v4": "inception_resnet_v1", "lenet": "lenet5", "mobilenet": "mobilenet_v3_small",
    "nin": "nin_cifar", "preact_resnet": "preact_resnet18", "resnet": "resnet20",
    "senet": "se_resnet18", "shufflenet": "shufflenet_v2_x0_5", "squeezenet": "squeezenet1_1",
    "vgg": "vgg11_lrn", "vit": "vit_tiny_patch4_32", "xception": "xception", "zfnet": "zfnet",
}
# ONNX: one network per distinct set of operators, not one per family (an export takes up to
# ≈ 20 s on one core). `python tests/scripts/onnx_cover.py` exports every representative and
# lists its ONNX operators (with the pooling attributes that change what they compute) and the
# core ATen operators of its torch.export graph: these seven together use all of them. Each but
# zfnet has operators no other representative has (botnet50: einsum, indexing of relative
# positions; cbam_resnet18: max-pooling attention; inception_v3: average pooling that does not
# count the padding; mobilenet_v3_small: hard swish/sigmoid, clamp; shufflenet_v2_x0_5: split;
# vit_tiny_patch4_32: layer norm, GELU, the class token's expand/select); zfnet adds LRN (Pow),
# ceil-mode max pooling and padding. (lenet5 goes to ONNX in the CLI test below.)
ONNX_COVER = ("botnet50", "cbam_resnet18", "inception_v3", "mobilenet_v3_small",
              "shufflenet_v2_x0_5", "vit_tiny_patch4_32", "zfnet")
# a few seconds each; the others are in the slow tier. TorchScript tracing takes ≤ 2.5 s for
# every representative: all in the quick tier.
QUICK_ONNX = {"zfnet"}


def test_every_family_has_a_representative() -> None:
    files = {p.stem for p in (REPO / "src" / "classicnets" / "models").glob("*.py")}
    families = files - {"__init__", "factory", "layers", "registry", "table", "weights"}
    assert set(FAMILIES) == families
    assert all(get_model_info(name).family == fam for fam, name in FAMILIES.items())
    assert set(FAMILIES.values()) <= set(list_models())
    assert set(ONNX_COVER) <= set(FAMILIES.values())


def _lively(net: nn.Module, shape: tuple[int, int, int]) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():  # zero-initialised (a head, a residual branch's last BN scale)
                p.normal_(0.0, 0.02, generator=g)
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # the plain average of the batches below
        net.train()
        for _ in range(2):
            net(torch.rand(4, *shape, generator=g))
    return net.eval()


def _trained(name: str, in_channels: int = 3, size: int = 32) -> Trained:
    try:
        net = create_model(name, num_classes=10, in_channels=in_channels, input_size=size)
    except InputSizeError as err:  # none of the representatives today; say so if one becomes
        pytest.fail(f"{name} no longer builds at {size} px: {err}")
    tf = EvalTransform(image_size=size, resize_size=size, in_channels=in_channels,
                       mean=(0.45,) * in_channels, std=(0.25,) * in_channels)
    # measured through the normalisation: BatchNorm statistics of the inputs the check feeds
    model = _lively(NormalizedClassifier(net, tf.mean, tf.std), (in_channels, size, size))
    return Trained(model=model, classes=[f"c{i}" for i in range(10)], transform=tf,
                   model_name=name, checkpoint=Path("random.ckpt"))


def _assert_matches(trained: Trained, path: Path, fmt: str) -> None:
    run = load_exported(path, fmt)
    g = torch.Generator().manual_seed(1)
    for batch in (1, 4):  # neither is the example batch (2) the file was exported with
        x = torch.rand(batch, *trained.input_shape, generator=g)
        with torch.inference_mode():
            want = trained.model(x)
        got = run(x)
        assert got.shape == want.shape == (batch, 10)
        scale = max(1.0, float(want.abs().max()))
        diff = float((got - want).abs().max())
        assert diff <= TOLERANCE * scale, f"{fmt} batch {batch}: |diff| {diff:.2e}"


def _params(fmt: str) -> list:
    if fmt == "torchscript":
        return list(FAMILIES.values())
    return [pytest.param(name, id=name, marks=[needs_onnx] + (
        [] if name in QUICK_ONNX else [pytest.mark.slow])) for name in ONNX_COVER]


@pytest.mark.parametrize("name", _params("onnx"))
def test_onnx_equals_pytorch(name: str, tmp_path: Path) -> None:
    trained = _trained(name, in_channels=1 if name == "lenet5" else 3)
    path = export_model(trained, "onnx", tmp_path / f"{name}.onnx", verify=False).path
    _assert_matches(trained, path, "onnx")
    import onnx

    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", *trained.input_shape]
    assert read_metadata(path, "onnx")["classes"] == trained.classes


@pytest.mark.parametrize("name", _params("torchscript"))
def test_torchscript_equals_pytorch(name: str, tmp_path: Path) -> None:
    trained = _trained(name, in_channels=1 if name == "lenet5" else 3)
    path = export_model(trained, "torchscript", tmp_path / f"{name}.pt", verify=False).path
    _assert_matches(trained, path, "torchscript")
    meta = read_metadata(path, "torchscript")
    assert meta["classes"] == trained.classes
    assert EvalTransform.from_dict(meta["eval_transform"]) == trained.transform


def test_the_built_in_check_passes_and_reports(tmp_path: Path) -> None:
    result = export_model(_trained("resnet20"), "torchscript", tmp_path / "m.pt")
    assert result.max_diff is not None and result.max_diff <= TOLERANCE
    meta = json.loads(result.metadata_path.read_text())
    assert meta["format"] == "torchscript" and meta["file"] == "m.pt"
    assert "normalisation is inside" in meta["input"]


# ------------------------------------------------------------------ what cannot export


@torch.library.custom_op("classicnets_test::wiggle", mutates_args=())
def _wiggle(x: torch.Tensor) -> torch.Tensor:
    """An operation no exporter knows (as a user's own CUDA kernel would be)."""
    return x * 2


@_wiggle.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Wiggle(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _wiggle(x)


class Odd(nn.Module):
    """A small classifier with one troublesome piece in the middle."""

    def __init__(self, piece: str) -> None:
        super().__init__()
        self.piece = piece
        self.wiggle = Wiggle()
        self.fc = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.piece == "custom_op":
            x = self.wiggle(x)
        elif self.piece == "data_dependent" and x.mean() > 0.5:
            x = x * 2
        elif self.piece == "python_batch":
            return self.fc(x.reshape(int(x.shape[0]), -1))
        return self.fc(x.flatten(1))


def _odd(piece: str) -> Trained:
    tf = EvalTransform(image_size=4, resize_size=4, in_channels=3, mean=(0.5,) * 3,
                       std=(0.25,) * 3)
    return Trained(model=NormalizedClassifier(Odd(piece), tf.mean, tf.std).eval(),
                   classes=list("abcde"), transform=tf, model_name=f"odd_{piece}",
                   checkpoint=Path("odd.ckpt"))


@needs_onnx
@pytest.mark.parametrize(("piece", "message"), [
    # an operator with no ONNX translation is named with the layer that calls it
    ("custom_op", r"cannot export odd_custom_op to ONNX: operation `classicnets_test\.wiggle` in "
                  r"layer `net\.wiggle` \(Wiggle\) has no ONNX translation"),
    # data-dependent Python control flow is named with its source line
    ("data_dependent", r"torch\.export cannot capture it.*test_export\.py:\d+ in forward: "
                       r"`elif self\.piece == \"data_dependent\" and x\.mean\(\) > 0\.5:`"),
    # a batch size turned into a Python number would bake the batch axis in
    ("python_batch", "specialized it to be a constant"),
])
def test_onnx_refusals_name_the_cause(piece: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=message):
        export_model(_odd(piece), "onnx", tmp_path / "m.onnx")


def test_torchscript_check_catches_a_baked_batch_and_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"fails at batch size 1 \(RuntimeError: mat1 and mat2 "
                                          r"shapes.*the tracer warned: test_export\.py:\d+: "
                                          r"Converting a tensor to a Python integer"):
        export_model(_odd("python_batch"), "torchscript", tmp_path / "m.pt")


def test_missing_onnx_packages_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as when absent
    with pytest.raises(ExportError, match=r"needs the onnxruntime package: pip install -e "
                                          r"'\.\[export\]'"):
        export_model(_odd("none"), "onnx", tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="choose one of onnx, torchscript"):
        export_model(_odd("none"), "tflite", tmp_path / "m.tflite")


class Cancel(nn.Module):
    """Logits that float32 cannot compute: a small value added to and taken from 1e8."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = 1e7 * x.flatten(1).abs().sum(1, keepdim=True)
        return (big + x.flatten(1)[:, :5]) - big


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_float32_rounding_is_told_from_a_wrong_file(offset: float, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that computes the float64 result passes the check even though it is far from
    float32 PyTorch; one that is farther from float64 than float32 PyTorch is fails."""
    trained = _odd("none")
    trained.model.net = Cancel()
    exact = NormalizedClassifier(Cancel(), trained.transform.mean, trained.transform.std)
    monkeypatch.setattr("classicnets.inference.export.load_exported", lambda path, fmt: (
        lambda x: exact.double()(x.double()).float() + offset))
    if offset:
        with pytest.raises(ExportError, match=r"differs from PyTorch by .* from float64 PyTorch "
                                              r"it differs by .*, float32 PyTorch by"):
            export_model(trained, "torchscript", tmp_path / "m.pt")
    else:
        assert export_model(trained, "torchscript", tmp_path / "m.pt").max_diff > TOLERANCE


# ------------------------------------------------------------------ src/export.py


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_checkpoint(tmp_path_factory.mktemp("digits"), "trainer.max_epochs=2")


@pytest.mark.parametrize("fmt", [pytest.param("onnx", marks=needs_onnx), "torchscript"])
def test_export_cli_gives_what_predict_gives(fmt: str, digits_ckpt: Path, tmp_path: Path
                                             ) -> None:
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "src" / "export.py"),
                           f"ckpt_path={digits_ckpt}", f"format={fmt}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "export" / "runs").iterdir()
    path = run / f"lenet5{'.onnx' if fmt == 'onnx' else '.pt'}"
    assert path.is_file() and (run / "lenet5.json").is_file()
    assert f"exported lenet5 ({fmt})" in proc.stdout and "checked against PyTorch" in proc.stdout
    assert "(batch, 1, 32, 32)" in proc.stdout
    # an image through the stored transform and the file = predict.py's probabilities
    meta = read_metadata(path, fmt)
    transform = EvalTransform.from_dict(meta["eval_transform"])
    image = Image.fromarray((torch.rand(20, 24) * 255).byte().numpy(), mode="L")
    image.save(tmp_path / "x.png")
    probs = load_exported(path, fmt)(transform.pixel_transform()(image)[None]).softmax(1)[0]
    (row,) = predict_files(load_trained(digits_ckpt), [tmp_path / "x.png"], top_k=3,
                           device="cpu")
    for r in (1, 2, 3):
        assert float(probs[meta["classes"].index(row[f"class_{r}"])]) == pytest.approx(
            row[f"prob_{r}"], abs=1e-5)

