"""Prediction from a checkpoint alone: `src/predict.py`, `classicnets.inference.predict`."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from PIL import Image

from classicnets.checkpoints import CheckpointError
from classicnets.data import ImageDataModule
from classicnets.data.transforms import EvalTransform, folder_transform
from classicnets.inference.predict import find_images, load_trained, predict_files
from conftest import CONF, REPO
from trained import make_image_folder, shape_image, train_checkpoint


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LeNet-5 trained for 5 epochs on digits (≈ 2 s): its last.ckpt."""
    return train_checkpoint(tmp_path_factory.mktemp("digits"), "trainer.max_epochs=5")


@pytest.fixture(scope="module")
def shapes_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LeNet-5 on an RGB image folder of circles and squares (folder recipe, named classes)."""
    root = make_image_folder(tmp_path_factory.mktemp("shapes_data"))
    return train_checkpoint(tmp_path_factory.mktemp("shapes"), "data=imagefolder",
                            f"data.path={root}", "data.image_size=32", "data.batch_size=16",
                            "data.num_workers=0", "trainer.max_epochs=3")


def _digit_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    dm = ImageDataModule("digits")
    dm.setup("test")
    data = dm.test_set
    return data.images[:n], data.labels[:n]


def _write_inputs(folder: Path) -> dict[str, str]:
    """Digits as grey PNG, RGB JPEG and RGBA PNG, a truncated PNG and a text file; the expected
    label of each readable file ('' for the unreadable ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = _digit_images(6)
    expected = {}
    for i, (img, label) in enumerate(zip(images, labels)):
        grey = Image.fromarray(img[0].numpy(), mode="L")
        name = [f"grey_{i}.png", f"rgb_{i}.jpg", f"rgba_{i}.png"][i % 3]
        image = {0: grey, 1: grey.convert("RGB"), 2: grey.convert("RGBA")}[i % 3]
        image.save(folder / name, quality=100)
        expected[name] = str(int(label))
    whole = (folder / "grey_0.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.txt").write_text("not an image\n")
    expected |= {"truncated.png": "", "notes.txt": ""}
    return expected


# ------------------------------------------------------------------ the checkpoint


def test_checkpoint_carries_class_names_and_eval_transform(digits_ckpt: Path,
                                                           shapes_ckpt: Path) -> None:
    saved = torch.load(digits_ckpt, weights_only=True)[ImageDataModule.__qualname__]
    assert saved["classes"] == [str(i) for i in range(10)]
    assert EvalTransform.from_dict(saved["eval_transform"]) == EvalTransform(
        image_size=32, resize_size=32, in_channels=1, mean=(0.3,), std=(0.37,))
    saved = torch.load(shapes_ckpt, weights_only=True)[ImageDataModule.__qualname__]
    assert saved["classes"] == ["circle", "square"]
    tf = EvalTransform.from_dict(saved["eval_transform"])
    # 256/224 of 32, the 8-bit image resized as folder_transform does
    assert (tf.image_size, tf.resize_size, tf.in_channels, tf.resize_uint8) == (32, 37, 3, True)


def test_folder_transform_is_the_training_evaluation(shapes_ckpt: Path) -> None:
    tf = load_trained(shapes_ckpt).transform
    image = shape_image("circle", (50, 40), random.Random(1))
    ours = (tf.pixel_transform()(image) - torch.tensor(tf.mean).view(-1, 1, 1)) / torch.tensor(
        tf.std).view(-1, 1, 1)
    theirs = folder_transform(train=False, image_size=32, in_channels=3, mean=tf.mean,
                              std=tf.std)(image)
    assert ours.shape == theirs.shape == (3, 32, 32)
    assert (ours - theirs).abs().max() < 1e-6


def test_predictions_equal_the_evaluation_forward(digits_ckpt: Path, tmp_path: Path) -> None:
    images, labels = _digit_images(16)
    files = []
    for i, img in enumerate(images):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(img[0].numpy(), mode="L").save(files[-1])
    trained = load_trained(digits_ckpt)
    rows = predict_files(trained, files, top_k=10, batch_size=5, device="cpu")
    got = torch.zeros(16, 10)
    for i, row in enumerate(rows):
        for r in range(1, 11):
            got[i, int(row[f"class_{r}"])] = row[f"prob_{r}"]
    # the same images through the DataModule's evaluation path and the bare network
    dm = ImageDataModule("digits", batch_size=16, image_size=32)
    dm.setup("test")
    x, y = next(iter(dm.test_dataloader()))
    assert torch.equal(y, labels)
    with torch.inference_mode():
        want = trained.model.net(x).softmax(1)
    assert (got - want).abs().max() < 1e-5
    assert (got.argmax(1) == labels).float().mean() >= 0.75  # it did learn


# ------------------------------------------------------------------ src/predict.py


def _run_predict(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(REPO / "src" / "predict.py"), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)


def test_predict_cli_reports_every_file(digits_ckpt: Path, tmp_path: Path) -> None:
    expected = _write_inputs(tmp_path / "inputs")
    proc = _run_predict(tmp_path, f"ckpt_path={digits_ckpt}", f"input={tmp_path / 'inputs'}",
                        "top_k=3", "batch_size=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "predict" / "runs").iterdir()
    with open(run / "predictions.csv") as fh:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(fh)}
    assert list(next(iter(rows.values()))) == [
        "file", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3", "error"]
    assert set(rows) == set(expected)
    assert rows["notes.txt"]["error"].startswith("UnidentifiedImageError")
    assert rows["truncated.png"]["error"]  # truncated: unreadable, reported
    correct = 0
    for name, label in expected.items():
        row = rows[name]
        if not label:
            assert row["class_1"] == "" and row["prob_1"] == ""
            continue
        assert row["error"] == ""
        probs = [float(row[f"prob_{r}"]) for r in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        correct += row["class_1"] == label
        assert name in proc.stdout  # printed too
    assert correct >= 4  # of 6 (grey, RGB and RGBA alike)
    assert "predictions:" in proc.stdout and "2 of 8 file(s) could not be read" in proc.stdout


def test_grey_and_rgba_images_meet_an_rgb_network(shapes_ckpt: Path, tmp_path: Path) -> None:
    image = shape_image("square", (40, 40), random.Random(3))
    image.save(tmp_path / "rgb.png")
    rgba = image.convert("RGBA")
    rgba.putalpha(128)  # alpha is dropped, as torchvision's ImageFolder loader does
    rgba.save(tmp_path / "rgba.png")
    image.convert("L").save(tmp_path / "grey.png")
    image.convert("L").convert("RGB").save(tmp_path / "grey_as_rgb.png")
    trained = load_trained(shapes_ckpt)
    rows = predict_files(trained, find_images(tmp_path), top_k=2, device="cpu")
    by = {Path(r["file"]).stem: r for r in rows}
    assert all(not r["error"] and r["class_1"] in ("circle", "square") for r in rows)
    assert by["rgba"]["prob_1"] == pytest.approx(by["rgb"]["prob_1"], abs=1e-6)
    assert by["grey"]["prob_1"] == pytest.approx(by["grey_as_rgb"]["prob_1"], abs=1e-6)


@pytest.mark.gpu
def test_prediction_on_the_gpu_equals_the_cpu(digits_ckpt: Path, tmp_path: Path) -> None:
    _write_inputs(tmp_path)
    files = find_images(tmp_path)
    cpu = predict_files(load_trained(digits_ckpt), files, device="cpu")
    gpu = predict_files(load_trained(digits_ckpt), files, device="cuda", batch_size=3)
    for a, b in zip(cpu, gpu):
        assert a["class_1"] == b["class_1"] and a["error"] == b["error"]
        if a["prob_1"] is not None:  # None: an unreadable file
            assert a["prob_1"] == pytest.approx(b["prob_1"], abs=1e-4)


def test_inputs_file_folder_and_glob(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.png", "a/b/2.jpg", "a/b/3.txt", "a/.hidden.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "a" / ".cache").mkdir()
    (tmp_path / "a" / ".cache" / "4.png").write_bytes(b"")
    rel = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path / "a")]
    assert rel == ["a/1.png", "a/b/2.jpg", "a/b/3.txt"]  # the text file is reported later
    assert find_images(tmp_path / "a" / "1.png") == [tmp_path / "a" / "1.png"]
    found = find_images(f"{tmp_path}/a/**/*.png")
    assert [p.name for p in found] == ["1.png"]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        find_images(f"{tmp_path}/*.gif")
    with pytest.raises(FileNotFoundError, match="not a file, a folder or a glob"):
        find_images(tmp_path / "missing.png")


# ------------------------------------------------------------------ older checkpoints, mismatch


def _old_checkpoint(ckpt: Path, out: Path) -> Path:
    """The checkpoint as classicnets wrote it before checkpoints carried class names."""
    raw = torch.load(ckpt, weights_only=True)
    del raw[ImageDataModule.__qualname__]
    torch.save(raw, out)
    return out


def _data_cfg(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("predict", overrides=["ckpt_path=x", "input=x", *overrides])
    GlobalHydra.instance().clear()
    return cfg.data


def test_older_checkpoint_needs_data(digits_ckpt: Path, tmp_path: Path) -> None:
    old = _old_checkpoint(digits_ckpt, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError, match=r"no class names.*trained on data=digits.*"
                                              r"e\.g\. data=digits"):
        load_trained(old)
    trained = load_trained(old, _data_cfg("data=digits"))
    assert trained.classes == [str(i) for i in range(10)]
    assert trained.transform == load_trained(digits_ckpt).transform


def test_checkpoint_and_data_mismatch_is_named(digits_ckpt: Path, tmp_path: Path) -> None:
    old = _old_checkpoint(digits_ckpt, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match=r"built for in_channels=1 but data gives "
                                         r"in_channels=3.*data\.in_channels=1"):
        load_trained(old, _data_cfg("data=synthetic", "data.num_samples=16"))
    # a saved transform that does not fit its network (a hand-edited or foreign file)
    raw = torch.load(digits_ckpt, weights_only=True)
    raw[ImageDataModule.__qualname__]["eval_transform"].update(
        in_channels=3, mean=[0.5] * 3, std=[0.5] * 3)
    torch.save(raw, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match="in_channels=1 but its saved data settings give 3"):
        load_trained(tmp_path / "odd.ckpt")


def test_console_scripts_are_declared() -> None:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["classicnets-predict"] == "classicnets.cli:predict_main"
    assert scripts["classicnets-export"] == "classicnets.cli:export_main"



@pytest.mark.parametrize("name", ["predict", "export"])
def test_entry_configs_compose(name: str, make_cfg: Callable[..., DictConfig]) -> None:
    extra = ["input=photos"] if name == "predict" else []
    cfg = make_cfg("ckpt_path=x.ckpt", *extra, config_name=name)
    assert cfg.task_name == name and cfg.get("data") is None  # the checkpoint brings its own
    if name == "predict":
        assert cfg.output == str(Path(cfg.paths.output_dir) / "predictions.csv")
    else:
        assert (cfg.format, cfg.verify, cfg.tolerance) == ("onnx", True, 1e-4)
    cfg = make_cfg("ckpt_path=x.ckpt", *extra, "data=digits", config_name=name, out="old")
    assert cfg.data.name == "digits"  # for checkpoints older than their class names
