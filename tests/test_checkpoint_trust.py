"""A checkpoint from someone else never runs code (issue 19).

Each entry point and library loader gets a real checkpoint with one extra pickled object whose
unpickling would create a directory: the directory is never created, and the error names the
refused type and the opt-in. Files that are not checkpoints get a message naming what they
are. ``trust_checkpoint=true`` is the one, logged, way past the weights-only loader.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

from classicnets.analysis.visualize import visualize
from classicnets.checkpoints import (
    CheckpointError,
    UntrustedCheckpointError,
    load_file,
    resave,
    trusting,
)
from classicnets.inference.export import export
from classicnets.inference.predict import load_trained, predict
from classicnets.models.weights import read_state_dict
from classicnets.runs.pipeline import evaluate, train
from classicnets.runs.preflight import check_checkpoint_fits
from classicnets.training.module import ImageClassifier
from conftest import REPO, compose_config
from trained import QUIET, train_checkpoint

REFUSED = "os.makedirs"


class _MakesADirectory:
    """Unpickling this calls os.makedirs(path, exist_ok=True): what a hostile checkpoint would
    do instead (idempotent, so a trusted file may be read more than once)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, int, bool]]:
        return os.makedirs, (self.path, 0o777, True)


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LeNet-5, one short epoch on digits: a real checkpoint to tamper with."""
    return train_checkpoint(tmp_path_factory.mktemp("good"), "trainer.max_epochs=1",
                            "+trainer.limit_train_batches=4", "+trainer.limit_val_batches=2")


@pytest.fixture
def hostile(good_ckpt: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(a copy of the good checkpoint whose hyperparameters carry the object, its marker)."""
    marker = tmp_path / "code_ran"
    ckpt = torch.load(good_ckpt, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["note"] = _MakesADirectory(marker)
    path = tmp_path / "hostile" / "last.ckpt"
    path.parent.mkdir()
    torch.save(ckpt, path)
    return path, marker


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "x.png"
    Image.new("L", (8, 8), 128).save(path)
    return path


def _entry(name: str, ckpt: Path, tmp_path: Path) -> None:
    """Run entry point ``name`` in process on ``ckpt``, as its src/<name>.py would."""
    out = tmp_path / f"run_{name}"
    try:
        if name == "train_ckpt_path":
            train(compose_config([*QUIET, f"ckpt_path={ckpt}", "trainer.max_epochs=2"], out))
        elif name == "pretrained":
            train(compose_config([*QUIET, f"+model.pretrained={ckpt}", "trainer.max_epochs=1"],
                                 out))
        elif name == "eval":
            evaluate(compose_config([f"ckpt_path={ckpt}", "data=digits", "logger=[]"], out,
                                    "eval"))
        elif name == "predict":
            predict(compose_config([f"ckpt_path={ckpt}", f"input={_image(tmp_path)}",
                                    "progress=false"], out, "predict"))
        elif name == "export":
            export(compose_config([f"ckpt_path={ckpt}", "format=torchscript"], out, "export"))
        elif name == "visualize":
            visualize(compose_config([f"ckpt_path={ckpt}", "method=gradcam",
                                      f"input={_image(tmp_path)}"], out, "visualize"))
        elif name == "load_checkpoint":
            ImageClassifier.load_checkpoint(ckpt)
        elif name == "load_from_checkpoint":  # Lightning's own API, as design.md documents
            ImageClassifier.load_from_checkpoint(ckpt)
        elif name == "load_trained":
            load_trained(ckpt)
        elif name == "read_state_dict":
            read_state_dict(ckpt)
        else:
            raise AssertionError(name)
    finally:
        GlobalHydra.instance().clear()


ENTRIES = ["train_ckpt_path", "pretrained", "eval", "predict", "export", "visualize",
           "load_checkpoint", "load_trained", "read_state_dict"]


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_hostile_checkpoint_never_runs(entry: str, hostile: tuple[Path, Path],
                                         tmp_path: Path) -> None:
    path, marker = hostile
    with pytest.raises(UntrustedCheckpointError) as info:
        _entry(entry, path, tmp_path)
    assert not marker.exists(), f"{entry} ran the checkpoint's code"
    text = str(info.value)
    assert str(path) in text and REFUSED in text and "trust_checkpoint=true" in text
    assert "python src/checkpoint.py resave" in text
    assert info.value.refused == REFUSED


@pytest.mark.parametrize("entry", ["eval", "predict", "export", "visualize", "load_checkpoint",
                                   "load_trained", "load_from_checkpoint"])
@pytest.mark.parametrize("key", ["model", "optimizer"])
def test_plain_values_that_name_code_are_refused(entry: str, key: str, good_ckpt: Path,
                                                 tmp_path: Path) -> None:
    """A weights-only file can still name a function for Hydra to call when the module is
    rebuilt: a ``_target_`` other than the network factory or a torch optimizer is refused."""
    marker = tmp_path / "code_ran"
    ckpt = torch.load(good_ckpt, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"][key] = {"_target_": "os.makedirs", "name": str(marker),
                                     "exist_ok": True}
    path = tmp_path / "named.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(UntrustedCheckpointError, match=rf"names 'os.makedirs' as {key}\._target_"):
        _entry(entry, path, tmp_path)
    assert not marker.exists()


def test_resume_in_place_refuses_a_hostile_last_ckpt(good_ckpt: Path, tmp_path: Path) -> None:
    """resume=<run dir> goes on from its newest checkpoint: that read is weights-only too."""
    run = good_ckpt.parent.parent
    marker = tmp_path / "code_ran"
    ckpt = torch.load(good_ckpt, map_location="cpu", weights_only=True)
    ckpt["loops"]["note"] = _MakesADirectory(marker)
    copy = tmp_path / "run"
    (copy / "checkpoints").mkdir(parents=True)
    torch.save(ckpt, copy / "checkpoints" / "last.ckpt")
    (copy / ".hydra").mkdir()
    (copy / ".hydra" / "overrides.yaml").write_text("[]\n")
    try:
        with pytest.raises(UntrustedCheckpointError, match=REFUSED):
            train(compose_config([*QUIET, f"resume={copy}", "trainer.max_epochs=2"], copy))
    finally:
        GlobalHydra.instance().clear()
    assert not marker.exists()
    assert run.is_dir()


def test_a_pth_state_dict_is_weights_only_too(tmp_path: Path) -> None:
    """A .pth/.pt/.bin suffix earns no trust: the same refusal."""
    marker = tmp_path / "code_ran"
    for suffix in (".pth", ".pt", ".bin"):
        path = tmp_path / f"w{suffix}"
        torch.save({"w": torch.zeros(2), "meta": _MakesADirectory(marker)}, path)
        with pytest.raises(UntrustedCheckpointError, match=REFUSED):
            read_state_dict(path)
    assert not marker.exists()


def test_trust_is_explicit_and_logged(hostile: tuple[Path, Path],
                                      caplog: pytest.LogCaptureFixture) -> None:
    path, marker = hostile
    with trusting(True):
        ckpt = load_file(path)
    assert marker.is_dir()  # the opt-in really unpickles in full: that is what it means
    assert "state_dict" in ckpt
    assert "trust_checkpoint=true" in caplog.text and str(path) in caplog.text
    marker.rmdir()
    with pytest.raises(UntrustedCheckpointError):  # outside the block: weights-only again
        load_file(path)
    assert not marker.exists()


def test_lightnings_own_opt_out_is_logged_too(good_ckpt: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """``ImageClassifier.load_from_checkpoint(path, weights_only=False)``, Lightning's own way
    past weights-only loading, is an opt-in as well: it says so in the log, naming the file;
    ``load_checkpoint(trust=True)`` logs its opt-in once."""
    caplog.set_level(logging.WARNING)
    ImageClassifier.load_from_checkpoint(good_ckpt, weights_only=False)
    assert "weights_only off" in caplog.text and str(good_ckpt) in caplog.text
    caplog.clear()
    ImageClassifier.load_checkpoint(good_ckpt, trust=True)
    assert caplog.text.count(str(good_ckpt)) == 1 and "trust_checkpoint=true" in caplog.text
    caplog.clear()
    ImageClassifier.load_from_checkpoint(good_ckpt)  # the default: weights-only, nothing logged
    assert str(good_ckpt) not in caplog.text


def test_the_cli_refuses_and_the_flag_lets_through(hostile: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    """``python src/predict.py``: refused with the message and a non-zero exit; with
    ``trust_checkpoint=true`` the prediction runs (and so did the file's code)."""
    path, marker = hostile
    image = _image(tmp_path)
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "HYDRA_FULL_ERROR": "0"}
    args = [sys.executable, str(REPO / "src" / "predict.py"), f"ckpt_path={path}",
            f"input={image}", "progress=false", f"hydra.run.dir={tmp_path / 'out'}"]
    refused = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert refused.returncode != 0
    assert REFUSED in refused.stderr and "trust_checkpoint=true" in refused.stderr
    assert not marker.exists()
    trusted = subprocess.run([*args, "trust_checkpoint=true"], capture_output=True, text=True,
                             env=env, cwd=tmp_path)
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert "x.png" in trusted.stdout
    assert "unpickling" in trusted.stdout + trusted.stderr  # the warning is in the log
    assert marker.is_dir()


# ---------------------------------------------------------------------------- not checkpoints
def _bad_files(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    png = tmp_path / "image.ckpt"
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:2000])
    folder = tmp_path / "folder.ckpt"
    folder.mkdir()
    return {"png": (png, "is a PNG image"), "empty": (empty, "is an empty file"),
            "truncated": (truncated, "truncated or damaged"),
            "directory": (folder, "is a directory")}


@pytest.mark.parametrize("entry", ENTRIES)
def test_files_that_are_not_checkpoints_are_named(entry: str, good_ckpt: Path,
                                                  tmp_path: Path) -> None:
    for kind, (path, says) in _bad_files(tmp_path, good_ckpt).items():
        with pytest.raises(CheckpointError) as info:
            _entry(entry, path, tmp_path)
        assert str(path) in str(info.value) and says in str(info.value), (kind, info.value)


def test_a_bare_state_dict_is_not_a_training_checkpoint(good_ckpt: Path,
                                                        tmp_path: Path) -> None:
    state = torch.load(good_ckpt, weights_only=True)["state_dict"]
    bare = tmp_path / "weights.pth"
    torch.save({k[4:]: v for k, v in state.items() if k.startswith("net.")}, bare)
    for entry in ("load_checkpoint", "predict", "eval"):
        with pytest.raises(CheckpointError, match="bare state dict.*model.pretrained"):
            _entry(entry, bare, tmp_path)


def test_another_networks_checkpoint_is_named(good_ckpt: Path, tmp_path: Path) -> None:
    """train ckpt_path= with another network's checkpoint: which one it holds, before fit."""
    cfg = compose_config([*QUIET, "model=resnet20"], tmp_path / "run")
    try:
        module = ImageClassifier(model=cfg.model, optimizer=cfg.optimizer,
                                 scheduler=cfg.scheduler)
        with pytest.raises(CheckpointError, match="holds lenet5.*this run builds resnet20"):
            check_checkpoint_fits(str(good_ckpt), module)
    finally:
        GlobalHydra.instance().clear()


# ---------------------------------------------------------------------------- older files
def test_an_older_checkpoint_with_objects_is_re_saved_by_the_one_command(
        good_ckpt: Path, tmp_path: Path) -> None:
    """An older checkpoint with a DictConfig and a Path in it: refused, naming the type and
    the re-save command; after ``python src/checkpoint.py resave`` it loads weights-only and
    still predicts."""
    ckpt = torch.load(good_ckpt, weights_only=True)
    ckpt["hyper_parameters"]["model"] = OmegaConf.create(ckpt["hyper_parameters"]["model"])
    ckpt["hyper_parameters"]["data_dir"] = Path("/data")
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    with pytest.raises(UntrustedCheckpointError, match=r"omegaconf\..*resave"):
        load_trained(old)
    proc = subprocess.run([sys.executable, str(REPO / "src" / "checkpoint.py"), "resave",
                           str(old)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "loads weights-only" in proc.stdout
    plain = torch.load(old, weights_only=True)
    assert plain["hyper_parameters"]["data_dir"] == "/data"
    assert isinstance(plain["hyper_parameters"]["model"], dict)
    assert load_trained(old).classes == [str(i) for i in range(10)]
    check = subprocess.run([sys.executable, str(REPO / "src" / "checkpoint.py"), "check",
                            str(old), str(tmp_path)], capture_output=True, text=True)
    assert check.returncode == 1  # the directory is refused, the re-saved file passes
    assert f"{old}: loads weights-only" in check.stdout and "is a directory" in check.stdout


def test_resave_of_an_unplain_object_names_it(tmp_path: Path) -> None:
    path = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {}, "thing": _Unplain()}, path)
    with pytest.raises(TypeError, match="_Unplain has no plain form"):
        resave(path, tmp_path / "out.ckpt")
    assert not (tmp_path / "out.ckpt").exists()


class _Unplain:
    pass


def test_a_checkpoint_with_a_removed_option_still_loads(good_ckpt: Path, tmp_path: Path
                                                       ) -> None:
    """Checkpoints written while module.lean_loop existed carry it; they load as they are."""
    ckpt = torch.load(good_ckpt, weights_only=True)
    ckpt["hyper_parameters"]["lean_loop"] = True
    old = tmp_path / "lean.ckpt"
    torch.save(ckpt, old)
    module = ImageClassifier.load_checkpoint(old)
    assert "lean_loop" not in module.hparams
    assert load_trained(old).classes == [str(i) for i in range(10)]
