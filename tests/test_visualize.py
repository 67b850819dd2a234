"""What the networks see: `src/visualize.py` and `classicnets.analysis`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.core.global_hydra import GlobalHydra
from PIL import Image
from torch import nn

from classicnets.analysis import attribution, features
from classicnets.analysis.deconvnet import default_layer, project, record_path, unpool
from classicnets.analysis.layers import LayerError, find_layer
from classicnets.analysis.visualize import METHODS, resolve_target, visualize
from classicnets.data import ImageDataModule
from classicnets.inference.predict import ImageFiles, NormalizedClassifier, Trained, load_trained
from classicnets.models import create_model
from classicnets.models.alexnet import TowerLRN
from conftest import REPO, compose_config
from trained import train_checkpoint


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LeNet-5 with max-pooling (so the deconvnet has switches), 5 epochs on digits (≈ 5 s),
    without the main job's distortions: a network trained on shifted digits is so sure of itself
    that hiding a stroke moves its probability by 1 % only, too little for the occlusion test."""
    return train_checkpoint(tmp_path_factory.mktemp("digits"), "trainer.max_epochs=5",
                            "model.subsampling=max", "data.augment=false")


@pytest.fixture(scope="module")
def trained(digits_ckpt: Path) -> Trained:
    return load_trained(digits_ckpt)


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[int]]:
    """Six test-set digits as 8×8 grey PNGs, and their labels."""
    folder = tmp_path_factory.mktemp("digit_pngs")
    dm = ImageDataModule("digits")
    dm.setup("test")
    files, labels = [], []
    for i in range(6):
        path = folder / f"digit_{i}.png"
        Image.fromarray(dm.test_set.images[i, 0].numpy(), mode="L").save(path)
        files.append(path)
        labels.append(int(dm.test_set.labels[i]))
    return files, labels


def _pixels(trained: Trained, files: list[Path]) -> list[torch.Tensor]:
    """The images as the network sees them (before normalisation), read as predict.py does."""
    data = ImageFiles(files, trained.transform)
    out = []
    for i in range(len(files)):
        x, error = data[i]
        assert not error
        out.append(x.unsqueeze(0))
    return out


# ------------------------------------------------------------------ deconvnet


X4 = torch.tensor([[1.0, 5.0, -2.0, 0.0],
                   [3.0, 2.0, 7.0, -1.0],
                   [0.0, -4.0, 1.0, 1.5],
                   [6.0, 2.0, -3.0, 2.0]]).view(1, 1, 4, 4)


def test_unpooling_puts_the_maxima_back_at_their_switches() -> None:
    net = nn.Sequential(OrderedDict(pool=nn.MaxPool2d(2)))
    proj = project(net, X4, "pool", top_k=1, keep="map")
    # maxima 5, 7, 6, 2 of the four 2×2 windows, at (0,1), (1,2), (3,0), (3,3)
    want = torch.zeros(4, 4)
    want[0, 1], want[1, 2], want[3, 0], want[3, 3] = 5.0, 7.0, 6.0, 2.0
    assert proj.images.shape == (1, 1, 4, 4)
    assert torch.equal(proj.images[0, 0], want)
    # overlapping pools (ZFNet's 3×3/2) can pick one input twice: both values come back
    pooled, switches = torch.tensor([[[[2.0, 3.0]]]]), torch.tensor([[[[1, 1]]]])
    assert unpool(pooled, switches, (1, 3)).flatten().tolist() == [0.0, 5.0, 0.0]


def test_projection_reverses_conv_relu_pool_by_hand() -> None:
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(2.0)
    net = nn.Sequential(OrderedDict(conv=conv, relu=nn.ReLU(inplace=True), pool=nn.MaxPool2d(2)))
    # forward: pooled 2·(5, 7, 6, 2); down: unpool → ReLU → transposed 1×1 conv (×2 again)
    whole = project(net, X4, "pool", keep="map").images[0, 0]
    want = torch.zeros(4, 4)
    want[0, 1], want[1, 2], want[3, 0], want[3, 3] = 20.0, 28.0, 24.0, 8.0
    assert torch.equal(whole, want)
    # keep="activation": only the strongest unit (14 from the 7 at (1, 2)) comes back
    single = project(net, X4, "pool", keep="activation")
    assert single.positions == [(0, 1)] and single.values == [14.0]
    want = torch.zeros(4, 4)
    want[1, 2] = 28.0
    assert torch.equal(single.images[0, 0], want)


def test_conv_step_is_the_transposed_convolution_with_the_same_filters() -> None:
    # grouped and strided, as AlexNet's towers, behind its tower-wise LRN and a ReLU6
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    net = nn.Sequential(OrderedDict(conv=conv, act=nn.ReLU6(), norm=TowerLRN(groups=2)))
    x = torch.randn(1, 4, 9, 9)
    assert default_layer(net, x) == "conv"
    proj = project(net, x, "norm", top_k=1, keep="map")
    c = proj.channels[0]
    signal = torch.zeros(1, 6, 5, 5)
    signal[0, c] = net(x)[0, c].detach()  # the normalised map goes down unchanged
    want = F.conv_transpose2d(signal.relu(), conv.weight.detach(), stride=2, padding=1,
                              groups=2)
    assert proj.images.shape == x.shape
    assert torch.allclose(proj.images, want, atol=1e-6)


def test_switches_are_the_ones_zfnet_records() -> None:
    net = create_model("zfnet", num_classes=10, in_channels=3, input_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    steps, _ = record_path(net, x, "features.pool5")
    ours = {s.name.split(".")[-1]: s for s in steps if s.switches is not None}
    _, theirs = net.forward_with_switches(x)
    assert set(ours) == set(theirs) == {"pool1", "pool2", "pool5"}
    for name, recorded in theirs.items():
        assert torch.equal(ours[name].switches, recorded.indices)
        assert tuple(ours[name].input_shape[-2:]) == tuple(recorded.input_size)
    assert default_layer(net, x) == "features.conv5"
    proj = project(net, x, top_k=2)
    assert proj.layer == "features.conv5" and proj.images.shape == (2, 3, 32, 32)
    # Grad-CAM through in-place ReLUs: captum works on a copy, the network stays as it was
    model = NormalizedClassifier(net, [0.5] * 3, [0.25] * 3).eval()
    cam, layer = attribution.gradcam(model, x.sigmoid(), 3)
    assert layer == "features.conv5" and cam.shape == (32, 32)
    assert net.features.relu5.inplace


def test_deconvnet_of_a_trained_network_stays_in_the_unit_receptive_field(
        trained: Trained, digit_files: tuple[list[Path], list[int]]) -> None:
    net, model = trained.model.net, trained.model
    x = _pixels(trained, digit_files[0][:1])[0]
    xn = (x - model.mean) / model.std
    proj = project(net, xn, top_k=4)
    assert proj.layer == "features.c3"  # the last conv with a spatial output (c5 is 1×1)
    assert proj.images.shape == (4, *x.shape[1:])
    assert proj.values == sorted(proj.values, reverse=True)
    for image, (row, col) in zip(proj.images, proj.positions):
        # c3's unit (r, c) sees input rows 2r..2r+13 and columns 2c..2c+13 (5×5, pool 2, 5×5)
        inside = torch.zeros(32, 32, dtype=torch.bool)
        inside[2 * row: 2 * row + 14, 2 * col: 2 * col + 14] = True
        assert image[0][~inside].abs().max() == 0
        assert image[0][inside].abs().max() > 0


def test_deconvnet_refuses_a_skip_connection_and_names_the_alternatives() -> None:
    net = create_model("resnet18", num_classes=10, in_channels=3, input_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    last = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)][-1]
    with pytest.raises(LayerError, match=r"skip connection.*guided_backprop"):
        project(net, x, last)
    # without layer=, the deepest conv below the first skip connection is used
    proj = project(net, x, top_k=1)
    assert isinstance(find_layer(net, proj.layer), nn.Conv2d)
    assert proj.images.shape == x.shape


# ------------------------------------------------------------------ occlusion, Grad-CAM


def test_occlusion_drops_the_true_class_most_on_the_ink(
        trained: Trained, digit_files: tuple[list[Path], list[int]]) -> None:
    files, labels = digit_files
    compared = 0
    for x, label in zip(_pixels(trained, files), labels):
        if int(trained.model(x).argmax()) != label:
            continue  # a digit the network gets wrong says nothing about where it looks
        # the digits' background is black: hiding a part means painting it black (a grey
        # square would add ink the network reacts to)
        drop = attribution.occlusion(trained.model, x, label, window=8, baseline=0.0)
        assert drop.shape == (32, 32)
        ink = x[0, 0] > 0.5
        # blank: farther than a square's side from any ink, so no square there covers ink
        near = F.max_pool2d(ink[None, None].float(), 17, 1, 8)[0, 0] > 0
        assert near.flatten()[drop.argmax()]  # the largest drop is at the digit
        blank = ~near
        if blank.sum() >= 8:
            assert drop[ink].mean() > drop[blank].mean() + 0.01, (
                label, drop[ink].mean(), drop[blank].mean())
            compared += 1
    assert compared >= 3


def test_gradcam_map_has_the_input_size_and_varies(
        trained: Trained, digit_files: tuple[list[Path], list[int]]) -> None:
    x = _pixels(trained, digit_files[0][:1])[0]
    target = digit_files[1][0]
    cam, layer = attribution.gradcam(trained.model, x, target)
    assert layer == "features.c3"
    assert cam.shape == x.shape[-2:]
    assert cam.min() >= 0 and cam.std() > 0
    cam1, _ = attribution.gradcam(trained.model, x, target, "features.c1")
    assert cam1.shape == x.shape[-2:] and not torch.equal(cam1, cam)


def test_guided_backprop_and_feature_maps(trained: Trained,
                                          digit_files: tuple[list[Path], list[int]]) -> None:
    x = _pixels(trained, digit_files[0][:1])[0]
    grads = attribution.guided_backprop(trained.model, x, digit_files[1][0])
    assert grads.shape == x.shape[1:] and grads.abs().max() > 0
    xn = (x - trained.model.mean) / trained.model.std
    maps = features.feature_maps(trained.model.net, xn, "features.c1_act")
    assert maps.shape == (6, 28, 28) and maps.min() >= 0  # after the ReLU
    tiles, per_row = features.filter_tiles(find_layer(trained.model.net, "features.c1"),
                                           "features.c1")
    assert tiles.shape == (6, 1, 5, 5) and per_row == 6
    assert torch.allclose(tiles.flatten(1).amin(1), torch.zeros(6))
    assert torch.allclose(tiles.flatten(1).amax(1), torch.ones(6))
    deep, per_row = features.filter_tiles(find_layer(trained.model.net, "features.c3"),
                                          "features.c3", max_filters=4)
    assert deep.shape == (4 * 6, 1, 5, 5) and per_row == 6  # a row of 6 channels per filter


# ------------------------------------------------------------------ src/visualize.py


def _cfg(out: Path, *overrides: str):
    return compose_config(list(overrides), out, config_name="visualize")


def _valid_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_each_method_writes_pngs(digits_ckpt: Path, tmp_path: Path,
                                 digit_files: tuple[list[Path], list[int]]) -> None:
    folder = digit_files[0][0].parent
    for method in METHODS:
        if method == "occlusion":
            continue  # through the command line below
        out = tmp_path / method
        try:
            written = visualize(_cfg(out, f"ckpt_path={digits_ckpt}", f"method={method}",
                                     f"input={folder}", "max_images=2", "deconvnet.top_k=4"))
        finally:
            GlobalHydra.instance().clear()
        want = ["filters_features.c1.png"] if method == "filters" else [
            f"{folder.name}_digit_{i}_{method}.png" for i in range(2)]
        assert sorted(p.name for p in written) == sorted(p.name for p in out.glob("*.png"))
        assert sorted(p.name for p in written) == want
        for path in written:
            width, height = _valid_png(path)
            assert width > 100 and height > 100


def test_images_go_to_tensorboard(digits_ckpt: Path, tmp_path: Path,
                                  digit_files: tuple[list[Path], list[int]]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    try:
        visualize(_cfg(tmp_path / "run", f"ckpt_path={digits_ckpt}", "method=gradcam",
                       f"input={digit_files[0][0]}", "logger=tensorboard"))
    finally:
        GlobalHydra.instance().clear()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == ["visualize/digit_0_gradcam"]


def test_bad_inputs_name_the_fix(trained: Trained, digits_ckpt: Path, tmp_path: Path,
                                 digit_files: tuple[list[Path], list[int]]) -> None:
    def run(*overrides: str) -> None:
        try:
            visualize(_cfg(tmp_path / "run", f"ckpt_path={digits_ckpt}", *overrides))
        finally:
            GlobalHydra.instance().clear()

    image = str(digit_files[0][0])
    with pytest.raises(ValueError, match=r"method='saliency'.*deconvnet, guided_backprop, "
                                         r"occlusion, gradcam, filters, feature_maps"):
        run("method=saliency", f"input={image}")
    with pytest.raises(LayerError, match=r"layer='features.c4'.*closest: .*features.c3.*"
                                         r"convolutional layers: features.c1, features.c3, "
                                         r"features.c5"):
        run("method=feature_maps", "layer=features.c4", f"input={image}")
    with pytest.raises(FileNotFoundError, match="not a file, a folder or a glob"):
        run("method=gradcam", f"input={tmp_path / 'missing.png'}")
    with pytest.raises(ValueError, match="needs input="):
        run("method=occlusion")
    with pytest.raises(LayerError, match="not a convolution"):
        run("method=filters", "layer=features.s2")
    with pytest.raises(ValueError, match=r"target='cat'.*0, 1, 2"):
        resolve_target(trained.classes, "cat", torch.zeros(10))
    assert resolve_target(trained.classes, 7, torch.zeros(10)) == 7
    # Grad-CAM on a network without convolutions: which methods work instead
    mlp = NormalizedClassifier(create_model("highway_fc", num_classes=10, in_channels=1,
                                            input_size=28), [0.5], [0.5]).eval()
    with pytest.raises(LayerError, match=r"no convolutional layer.*method=occlusion"):
        attribution.gradcam(mlp, torch.rand(1, 1, 28, 28), 0)


def test_cli_writes_occlusion_pngs(digits_ckpt: Path, tmp_path: Path,
                                   digit_files: tuple[list[Path], list[int]]) -> None:
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    folder = digit_files[0][0].parent
    proc = subprocess.run(
        [sys.executable, str(REPO / "src" / "visualize.py"), f"ckpt_path={digits_ckpt}",
         "method=occlusion", f"input={folder}", "max_images=2", "occlusion.window=6"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "visualize" / "runs").iterdir()
    pngs = sorted(run.glob("*.png"))
    assert [p.name for p in pngs] == [f"digit_pngs0_digit_{i}_occlusion.png" for i in range(2)]
    for path in pngs:
        _valid_png(path)
    assert "occlusion: 2 image(s)" in proc.stdout
