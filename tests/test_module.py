"""ImageClassifier: loss arithmetic, optimisation options and checkpoint round trips."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from classicnets.checkpoints import CheckpointError
from classicnets.data import ImageDataModule
from classicnets.models import ClassifierOutput
from classicnets.training.module import ImageClassifier
from classicnets.training.optim import WarmupCosine, build_scheduler, param_groups

MODEL = {"_target_": "classicnets.models.create_model", "name": "resnet20", "num_classes": 10,
         "in_channels": 3, "input_size": 32}


def test_aux_logits_add_with_their_weight() -> None:
    module = ImageClassifier(MODEL, aux_loss_weight=0.3)
    y = torch.tensor([1, 2, 3])
    main, a1, a2 = (torch.randn(3, 10) for _ in range(3))
    loss, logits = module.loss(ClassifierOutput(main, (a1, a2)), y)
    expected = F.cross_entropy(main, y) + 0.3 * (F.cross_entropy(a1, y) + F.cross_entropy(a2, y))
    assert torch.allclose(loss, expected) and logits is main
    plain, _ = module.loss(main, y)
    assert torch.allclose(plain, F.cross_entropy(main, y))


def test_label_smoothing_matches_its_definition() -> None:
    module = ImageClassifier(MODEL, label_smoothing=0.1)
    logits, y = torch.randn(4, 10), torch.tensor([0, 5, 9, 2])
    logp = logits.log_softmax(1)
    target = torch.full((4, 10), 0.1 / 10).scatter_(1, y[:, None], 0.9 + 0.1 / 10)
    assert torch.allclose(module.loss(logits, y)[0], -(target * logp).sum(1).mean(), atol=1e-6)
    with pytest.raises(ValueError, match="label_smoothing"):
        ImageClassifier(MODEL, label_smoothing=1.5)


def test_no_weight_decay_on_norm_and_bias() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    groups = param_groups(net, 5e-4, no_decay_norm_bias=True)
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    assert [sum(p.numel() for p in g["params"]) for g in groups] == [108, 4 + 4 + 4]
    assert len(param_groups(net, 5e-4, no_decay_norm_bias=False)) == 1


def test_warmup_cosine_schedule_values() -> None:
    fn = WarmupCosine(warmup=10, total=110, start_factor=0.1, final_factor=0.0)
    assert fn(0) == pytest.approx(0.1) and fn(5) == pytest.approx(0.55)
    assert fn(10) == pytest.approx(1.0) and fn(60) == pytest.approx(0.5)
    assert fn(110) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("cfg", [
    {"name": "cosine", "warmup_epochs": 1, "min_lr": 0.001},
    {"name": "step", "step_size": 2, "gamma": 0.5},
    {"name": "multistep", "milestones": [1, 3], "gamma": 0.1},
    {"name": "onecycle", "max_lr": 0.2, "pct_start": 0.25},
    {"name": "plateau", "monitor": "val/loss", "mode": "min", "factor": 0.5, "patience": 1},
    {"name": "none"},
])
def test_every_scheduler_builds(cfg: dict) -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    out = build_scheduler(opt, cfg, total_steps=40, max_epochs=4)
    if cfg["name"] == "none":
        assert out is None
        return
    assert out["interval"] in ("step", "epoch")
    if cfg["name"] == "multistep":
        sched = out["scheduler"]
        for _ in range(3):
            opt.step()
            sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.001)
    with pytest.raises(ValueError, match="not one of"):
        build_scheduler(opt, {"name": "exponential"}, total_steps=1, max_epochs=1)


def test_compile_keeps_state_dict_unprefixed() -> None:
    module = ImageClassifier(MODEL, compile=True)
    module.configure_model()
    assert module._compiled is not None
    keys = list(module.state_dict())
    assert keys and not any("_orig_mod" in k for k in keys)


def _fit_one_step(tmp_path: Path, model: dict = MODEL, **module_kwargs: object
                  ) -> tuple[ImageClassifier, Path]:
    module = ImageClassifier(model, scheduler={"name": "cosine"}, **module_kwargs)
    dm = ImageDataModule("synthetic", num_classes=10, num_samples=32, batch_size=16)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    return module, path


def test_load_from_checkpoint_needs_no_argument(tmp_path: Path) -> None:
    module, path = _fit_one_step(tmp_path, label_smoothing=0.1, channels_last=True)
    loaded = ImageClassifier.load_from_checkpoint(path, weights_only=True)
    assert loaded.hparams.label_smoothing == 0.1 and loaded.hparams.model["name"] == "resnet20"
    for (k, a), b in zip(module.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    x = torch.randn(2, 3, 32, 32)
    module.eval(), loaded.eval()
    assert torch.allclose(module(x), loaded(x))


def test_bad_checkpoints_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist; pass ckpt_path"):
        ImageClassifier.load_checkpoint(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x80\x04not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt is not a readable torch checkpoint "
                                              r"\(its pickle data is damaged"):
        ImageClassifier.load_checkpoint(junk)
    _, good = _fit_one_step(tmp_path)
    blob = good.read_bytes()
    good.write_bytes(blob[: len(blob) // 3])
    with pytest.raises(CheckpointError, match="m.ckpt is not a readable torch checkpoint "
                                              r"\(truncated or damaged"):
        ImageClassifier.load_checkpoint(good)


def test_metrics_top5_and_nn_module_form() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    module = ImageClassifier(net, num_classes=3)
    assert module.val_acc5.top_k == 3  # top-k never exceeds the class count
    with pytest.raises(ValueError, match="num_classes"):
        ImageClassifier(net)
    assert math.isclose(module.hparams.aux_loss_weight, 0.3)


@pytest.mark.slow
def test_compiled_training_step_runs(tmp_path: Path) -> None:
    lenet = {**MODEL, "name": "lenet5", "in_channels": 3}
    module, path = _fit_one_step(tmp_path, lenet, compile=True)
    assert module._compiled is not None
    state = torch.load(path, weights_only=True)["state_dict"]
    assert not any("_orig_mod" in k for k in state)
    ImageClassifier.load_from_checkpoint(path, weights_only=True, compile=False)


def _linear_fit(tmp_path: Path, batch_sizes: list[int], max_epochs: int = 1):
    """A linear net trained with lr=0 (it never changes) on batches of the given sizes."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    batches = [(torch.randn(n, 3, 2, 2), torch.randint(0, 4, (n,))) for n in batch_sizes]
    module = ImageClassifier(net, num_classes=4, optimizer={
        "_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.0})
    trainer = L.Trainer(accelerator="cpu", max_epochs=max_epochs, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)

    class Batches:  # a plain iterable (a list would be read as several dataloaders)
        def __len__(self) -> int:
            return len(batches)

        def __iter__(self):
            return iter(batches)

    trainer.fit(module, train_dataloaders=Batches())
    return net, batches, trainer


def test_epoch_training_metrics_weight_every_sample_alike(tmp_path: Path) -> None:
    # a short last batch must count for its 2 samples, not as a whole batch
    net, batches, trainer = _linear_fit(tmp_path, [5, 5, 2], max_epochs=2)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        logits = net(x)
    want_loss = F.cross_entropy(logits, y).item()
    want_acc = (logits.argmax(1) == y).float().mean().item()
    got = trainer.callback_metrics
    # the second epoch's values: the sums restart at every epoch
    assert math.isclose(got["train/loss"].item(), want_loss, rel_tol=1e-5)
    assert math.isclose(got["train/acc"].item(), want_acc, rel_tol=1e-6)
    assert 0.0 < want_acc < 1.0  # the check can fail either way

