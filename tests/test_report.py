"""The zoo report: `src/report.py`, `classicnets.analysis.zoo_report` (conf/report.yaml)."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image
from torch import nn

from classicnets.analysis.zoo_report import ZooRow, count_macs, run_report, saved_activation_bytes
from classicnets.models import create_model, get_model_info
from classicnets.models.registry import UnknownModelError
from conftest import REPO, compose_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# canonical parameter counts of shared/reference/architectures.md
REFERENCE_PARAMS = {
    "lenet5": 61_706,
    "resnet20": 269_722,
    "squeezenet1_1": 1_235_496,
    "mobilenet_v3_small": 2_542_856,
}
# small networks, fast on a CPU at 32 px
HANDFUL = list(REFERENCE_PARAMS)
TINY_TIMING = ["timing.rounds=2", "timing.warmup_steps=1", "timing.window_steps=1",
               "timing.min_window_s=0", "batch_size=2"]


@pytest.fixture(scope="module")
def zoo32(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[ZooRow], Path]:
    """The report of a handful of networks at 32 px, 10 classes, through the Hydra config."""
    out = tmp_path_factory.mktemp("zoo32")
    cfg = compose_config([f"models=[{','.join(HANDFUL)}]", "image_size=32", "num_classes=10",
                          *TINY_TIMING], out, "report")
    try:
        rows = run_report(cfg)
    finally:
        GlobalHydra.instance().clear()
    return rows, out


def test_report_measures_every_selected_network(zoo32: tuple[list[ZooRow], Path]) -> None:
    rows, out = zoo32
    assert [r.model for r in rows] == HANDFUL
    for r in rows:
        assert r.status == "measured", (r.model, r.reason)
        assert (r.image_size, r.num_classes, r.in_channels) == (32, 10, 3)
        assert r.macs > 0 and r.images_per_s > 0 and r.ms_per_step > 0
        assert r.activation_mib > 0 and r.batch_size == 2
        # the parameters of the network as built for 32 px / 10 classes
        built = create_model(r.model, num_classes=10, in_channels=3, input_size=32)
        assert r.params == sum(p.numel() for p in built.parameters())
    with (out / "zoo.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [t["model"] for t in table] == HANDFUL
    assert int(table[1]["macs"]) == rows[1].macs
    md = (out / "zoo.md").read_text()
    for name in HANDFUL:
        assert f"`{name}`" in md
    assert "FLOPs / 2" in md  # the MACs definition is stated


def test_canonical_parameters_equal_the_reference_table(
    zoo32: tuple[list[ZooRow], Path],
) -> None:
    rows, _ = zoo32
    assert {r.model: r.canonical_params for r in rows} == REFERENCE_PARAMS
    # resnet20 is a CIFAR network: at 32 px and 10 classes it is its canonical self
    r20 = next(r for r in rows if r.model == "resnet20")
    assert r20.params == r20.canonical_params and r20.macs == r20.canonical_macs


def test_paper_figures_come_from_the_registry(zoo32: tuple[list[ZooRow], Path]) -> None:
    rows, _ = zoo32
    for r in rows:
        result = get_model_info(r.model).result
        assert result is not None and r.paper_dataset == result.dataset
        assert r.paper_top1 == result.top1 or (result.top1 is None and math.isnan(r.paper_top1))
    by_name = {r.model: r for r in rows}
    assert by_name["lenet5"].paper_dataset == "MNIST"  # its own dataset, named
    assert by_name["resnet20"].paper_dataset == "CIFAR-10"
    assert by_name["mobilenet_v3_small"].paper_dataset == "ImageNet"


def test_plots_are_valid_pngs(zoo32: tuple[list[ZooRow], Path]) -> None:
    _, out = zoo32
    for name in ("zoo_accuracy_vs_macs.png", "zoo_params_by_year.png"):
        path = out / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            assert img.format == "PNG" and min(img.size) > 100


def test_lenet5_macs_equal_a_hand_count() -> None:
    # C1: 6 maps 28×28, 5×5×1 kernels; S2 pooling (not counted); C3: 16 maps 10×10, 5×5×6;
    # S4; C5: 120 units over 16×5×5; F6: 120 → 84; output 84 → 10
    c1 = 6 * 28 * 28 * (5 * 5 * 1)
    c3 = 16 * 10 * 10 * (5 * 5 * 6)
    c5 = 120 * (16 * 5 * 5)
    f6 = 84 * 120
    out = 10 * 84
    assert c1 + c3 + c5 + f6 + out == 416_520
    assert count_macs(create_model("lenet5"), torch.zeros(1, 1, 32, 32)) == 416_520


def test_macs_follow_the_conv_formula_for_strides_padding_and_groups() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 20 px -> 10 px
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, groups=4),  # 10 px, 2 input channels per group
        nn.Flatten(),
        nn.Linear(16 * 10 * 10, 5),
    )
    expected = 8 * 10 * 10 * (3 * 3 * 3) + 16 * 10 * 10 * (3 * 3 * 2) + 5 * 1600
    assert count_macs(net, torch.zeros(1, 3, 20, 20)) == expected


def test_saved_activation_bytes_count_each_storage_once_without_weights() -> None:
    lin = nn.Linear(100, 50)
    net = nn.Sequential(lin, nn.ReLU())
    x = torch.randn(4, 100, requires_grad=False)
    y = torch.zeros(4, dtype=torch.long)
    got = saved_activation_bytes(net, x, y)
    # linear saves its input (4×100); ReLU its output (4×50); cross-entropy its log-softmax
    # (4×50), the targets (4 int64) and the loss's total-weight scalar (one float32); the
    # weight (a parameter) is not counted
    assert got == 4 * (4 * 100 + 4 * 50 + 4 * 50) + 8 * 4 + 4


def test_a_network_too_big_for_the_size_is_listed_with_the_reason(tmp_path: Path) -> None:
    cfg = compose_config(["models=[lenet5,inception_v3]", "image_size=16", "timing.enabled=false",
                          "plots=false"], tmp_path, "report")
    try:
        rows = run_report(cfg)
    finally:
        GlobalHydra.instance().clear()
    lenet, inception = rows
    assert lenet.status == "not timed" and lenet.macs > 0  # counted, not timed (as asked)
    assert inception.status == "cannot run"
    assert "smallest input size it accepts is 21" in inception.reason
    md = (tmp_path / "zoo.md").read_text()
    assert "## Cannot run at 16 px" in md and "`inception_v3`: inception_v3 cannot take" in md


def test_data_sets_size_and_classes(tmp_path: Path) -> None:
    from classicnets.analysis.zoo_report import _settings

    cfg = compose_config(["data=cifar10", "models=[resnet20]"], tmp_path, "report")
    try:
        s = _settings(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert (s["image_size"], s["num_classes"], s["in_channels"]) == (32, 10, 3)
    assert "cifar10" in s["dataset"]


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["models=[resnet18,resnt50]"], UnknownModelError, "Did you mean: resnet50"),
        (["exclude=[vgg]"], UnknownModelError, "unknown model 'vgg'"),
        (["models=some"], ValueError, "models=all or a list"),
        (["models=[]"], ValueError, "selects nothing"),
        (["image_size=0"], ValueError, "image_size=0 must be a positive integer"),
        (["batch_size=-2"], ValueError, "batch_size=-2 must be a positive integer"),
        (["precision=fp8"], ValueError, "not one of 32-true"),
        (["timing.rounds=0"], ValueError, "timing.rounds=0 must be a positive integer"),
    ],
)
def test_bad_settings_are_refused_before_measuring(
    tmp_path: Path, overrides: list[str], error: type[Exception], message: str
) -> None:
    cfg = compose_config(overrides, tmp_path, "report")
    try:
        with pytest.raises(error, match=message.replace("(", r"\(")):
            run_report(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert not (tmp_path / "zoo.md").exists()


def test_unknown_dataset_names_the_choices_from_the_entry_script(tmp_path: Path) -> None:
    env = {**os.environ, "PROJECT_ROOT": str(REPO), "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "src" / "report.py"), "data=imagenett",
         f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "Could not find 'data/imagenett'" in proc.stderr
    assert "cifar10" in proc.stderr and "imagenet" in proc.stderr  # the valid choices
