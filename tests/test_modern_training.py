"""The training side of the modern recipes: Mixup/CutMix with soft targets, the BCE loss, the EMA
callback (definition, checkpoint, bit-exact resume, torch.compile), LAMB/LARS and the
weight-decay exclusions."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from classicnets.callbacks.ema import EMA, apply_ema_weights, ema_state_dict
from classicnets.checkpoints import (
    CheckpointError,
    UntrustedCheckpointError,
    check_targets,
    load_file,
)
from classicnets.models import create_model
from classicnets.training.mixing import MixConfig, Mixer, one_hot_targets
from classicnets.training.module import ImageClassifier
from classicnets.training.optim import lamb, lars, param_groups


def _timm():
    return pytest.importorskip("timm")  # the reference implementations (the dev extra has it)

SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "momentum": 0.9}


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 5))


# ------------------------------------------------------------------ mixup / cutmix
def test_soft_targets_match_timm() -> None:
    _timm()
    from timm.data.mixup import mixup_target

    y = torch.tensor([0, 3, 1, 4])
    mixer = Mixer(MixConfig(mixup_alpha=0.4), num_classes=5, smoothing=0.1)
    x = torch.randn(4, 3, 8, 8)
    kind, lam, _ = mixer.draw((7, 0, 3, 0), 8, 8)
    assert kind == "mixup" and 0 < lam < 1
    mixed, target = mixer(x, y, (7, 0, 3, 0))
    torch.testing.assert_close(target, mixup_target(y, 5, lam=lam, smoothing=0.1))
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    torch.testing.assert_close(target.sum(1), torch.ones(4))
    # smoothing folded in as cross-entropy's label_smoothing defines it
    logits = torch.randn(4, 5)
    torch.testing.assert_close(F.cross_entropy(logits, one_hot_targets(y, 5, 0.1)),
                               F.cross_entropy(logits, y, label_smoothing=0.1))


def test_cutmix_box_and_weight() -> None:
    mixer = Mixer(MixConfig(cutmix_alpha=1.0), num_classes=3)
    x, y = torch.randn(2, 1, 16, 12), torch.tensor([0, 2])
    for seed in range(20):
        kind, lam, box = mixer.draw((seed,), 16, 12)
        assert kind == "cutmix" and box is not None
        top, bottom, left, right = box
        mixed, target = mixer(x, y, (seed,))
        pasted = torch.zeros(16, 12, dtype=torch.bool)
        pasted[top:bottom, left:right] = True
        # inside the box the other image, outside this one; the weight is the area kept
        assert torch.equal(mixed[0, 0][pasted], x[1, 0][pasted])
        assert torch.equal(mixed[0, 0][~pasted], x[0, 0][~pasted])
        assert lam == pytest.approx(1 - pasted.float().mean().item())
        torch.testing.assert_close(target[0], torch.tensor([lam, 0.0, 1 - lam]))


def test_mix_draws_are_keyed_and_follow_prob_and_switch() -> None:
    both = Mixer(MixConfig(mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.6, switch_prob=0.25), 10)
    draws = [both.draw((42, 0, step, 0), 32, 32) for step in range(2000)]
    assert draws[:50] == [both.draw((42, 0, s, 0), 32, 32) for s in range(50)]  # reproducible
    kinds = [d[0] for d in draws]
    mixed = sum(k != "none" for k in kinds)
    assert mixed / 2000 == pytest.approx(0.6, abs=0.04)
    assert kinds.count("cutmix") / mixed == pytest.approx(0.25, abs=0.04)
    assert all(k == "none" for k, *_ in (Mixer(MixConfig(mixup_alpha=1.0, prob=0.0), 10).draw(
        (s,), 8, 8) for s in range(50)))


def test_train_acc_counts_the_largest_class_of_the_mix() -> None:
    torch.manual_seed(0)
    module = ImageClassifier(_net(), num_classes=5, mixup={"mixup_alpha": 1.0})
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 5, (16,))
    module.training_step((x, y), 0)
    mixed, target = module._mixer(x, y, (torch.initial_seed(), 0, 0, 0))
    with torch.no_grad():
        logits = module.net(mixed)
    expected = (logits.argmax(1) == target.argmax(1)).sum().item()
    assert module._train_sums is not None
    assert module._train_sums[1].item() == expected
    assert module._train_sums[0].item() == pytest.approx(
        F.cross_entropy(logits, target).item() * 16, rel=1e-5)


def test_bce_matches_timm() -> None:
    _timm()
    from timm.loss import BinaryCrossEntropy

    logits, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    for smoothing, threshold in ((0.0, None), (0.1, 0.2), (0.1, None)):
        module = ImageClassifier(_net(), num_classes=5, loss="bce", label_smoothing=smoothing,
                                 bce_target_threshold=threshold)
        ref = BinaryCrossEntropy(smoothing=smoothing, target_threshold=threshold)
        torch.testing.assert_close(module.loss(logits, y)[0], ref(logits, y))
    soft = one_hot_targets(y, 5, 0.1) * 0.7 + one_hot_targets(y.flip(0), 5, 0.1) * 0.3
    module = ImageClassifier(_net(), num_classes=5, loss="bce", bce_target_threshold=0.2)
    torch.testing.assert_close(
        module.loss(logits, soft)[0],
        F.binary_cross_entropy_with_logits(logits, (soft > 0.2).float()))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mixup": {"mixup_alpha": -0.1}}, r"module.mixup.mixup_alpha=-0.1 must be >= 0"),
    ({"mixup": {"cutmix_alpha": -1}}, r"module.mixup.cutmix_alpha=-1.0 must be >= 0"),
    ({"mixup": {"mixup_alpha": 0.2, "prob": 1.5}}, r"module.mixup.prob=1.5 .* \[0, 1\]"),
    ({"mixup": {"switch_prob": -0.5}}, r"module.mixup.switch_prob=-0.5 .* \[0, 1\]"),
    ({"mixup": {"alpha": 0.2}}, r"module.mixup.alpha is not an option.*mixup_alpha"),
    ({"loss": "focal"}, r"module.loss='focal' is not one of cross_entropy, bce"),
    ({"loss": "bce", "bce_target_threshold": 1.5}, r"bce_target_threshold=1.5 must be in"),
    ({"bce_target_threshold": 0.2}, r"applies to module.loss=bce only"),
])
def test_bad_training_options_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ImageClassifier(_net(), num_classes=5, **kwargs)


def test_mixup_needs_two_classes() -> None:
    with pytest.raises(ValueError, match=r"module.mixup mixes labels of two images.*1 class"):
        ImageClassifier(_net(), num_classes=1, mixup={"cutmix_alpha": 1.0})
    ImageClassifier(_net(), num_classes=1)  # off: fine


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"decay": 1.0}, r"callbacks.ema.decay=1.0 must be in \(0, 1\)"),
    ({"decay": 0.0}, r"callbacks.ema.decay=0.0 must be in \(0, 1\)"),
    ({"update_every_n_steps": 0}, r"update_every_n_steps=0 must be >= 1"),
    ({"test_weights": "best"}, r"test_weights='best' is not one of ema, model"),
])
def test_bad_ema_options_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EMA(**kwargs)


# ------------------------------------------------------------------ EMA
class _Snapshots(L.Callback):
    """The network's state after every optimizer step (runs before the EMA callback)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.states.append({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 8, 8, generator=g), torch.randint(0, 5, (32,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8)  # 4 steps an epoch, fixed order


def _fit(root: Path, epochs: int, ema: EMA, *, ckpt: Path | None = None, net=None,
         extra: list | None = None, after: list | None = None, **module_kwargs
         ) -> tuple[ImageClassifier, L.Trainer]:
    torch.manual_seed(0)
    module = ImageClassifier(net if net is not None else _net(), num_classes=5, optimizer=SGD,
                             mixup={"mixup_alpha": 0.2, "cutmix_alpha": 1.0}, **module_kwargs)
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=root,
                        callbacks=[*(extra or []), ema, *(after or [])],
                        num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=_loader(), val_dataloaders=_loader(),
                ckpt_path=ckpt)
    return module, trainer


def test_ema_follows_its_definition_and_is_stored_weights_only(tmp_path: Path) -> None:
    snaps = _Snapshots()
    ema = EMA(decay=0.8, update_every_n_steps=2, start_step=1)
    module, trainer = _fit(tmp_path, 2, ema, extra=[snaps])
    # updates after steps 2, 4, 6 (0-based, every 2nd from step 1 on, as Lightning's
    # EMAWeightAveraging and torchvision count): the first copies, then decay·avg + (1-decay)·w
    expected = None
    for i, state in enumerate(snaps.states):
        if i >= 1 and i % 2 == 0:
            expected = ({k: v.clone() for k, v in state.items()} if expected is None else {
                k: (0.8 * expected[k] + 0.2 * v if v.is_floating_point() else v)
                for k, v in state.items()})
    assert expected is not None and ema.average is not None
    got = ema.average.module.state_dict()
    for key, value in expected.items():
        if value.is_floating_point():
            torch.testing.assert_close(got[key], value, msg=key)
    assert ema.updates == 3 and int(ema.average.n_averaged) == 3
    assert "val/acc_ema" in trainer.callback_metrics and "val/acc" in trainer.callback_metrics
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    ckpt = load_file(path)  # weights-only
    # the state dict is the trained weights; the average is beside it, in plain tensors
    torch.testing.assert_close(ckpt["state_dict"]["net.5.weight"], module.net[5].weight)
    assert not torch.equal(ckpt["ema"]["state_dict"]["5.weight"], module.net[5].weight)
    net = copy.deepcopy(module.net)
    apply_ema_weights(net, path)
    torch.testing.assert_close(net[5].weight, got["5.weight"], rtol=0, atol=0)
    # a checkpoint without the average says so, naming the option
    del ckpt["ema"]
    torch.save(ckpt, tmp_path / "plain.ckpt")
    with pytest.raises(CheckpointError, match="holds no EMA weights.*weights=model"):
        ema_state_dict(tmp_path / "plain.ckpt")


class _SaveAt(L.Callback):
    def __init__(self, step: int, path: Path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


class _AverageAt(L.Callback):
    def __init__(self, step: int, ema: EMA) -> None:
        self.step, self.ema = step, ema
        self.state: dict[str, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and self.ema.average is not None:
            self.state = {k: v.clone() for k, v in self.ema.average.module.state_dict().items()}


def test_a_checkpoint_saved_mid_step_holds_that_steps_average(tmp_path: Path) -> None:
    # the guard saves last.ckpt in its on_train_batch_end at a signal, before this callback's
    # hook runs: the file must still hold the average of the weights it holds
    ema = EMA(decay=0.7)
    after = _AverageAt(6, ema)
    _fit(tmp_path, 2, ema, extra=[_SaveAt(6, tmp_path / "mid.ckpt")], after=[after])
    ckpt = load_file(tmp_path / "mid.ckpt")
    assert ckpt["global_step"] == 6
    assert (int(ckpt["ema"]["n_averaged"]), ckpt["ema"]["latest_update_step"]) == (6, 6)
    for key, value in after.state.items():
        assert torch.equal(ckpt["ema"]["state_dict"][key], value), key
    assert ema.updates == 8  # caught up once, not twice


def test_ema_warmup_ramps_the_decay() -> None:
    ema = EMA(decay=0.999, warmup=True)
    values = []
    for n in (0, 1, 10, 10_000):
        ema.updates = n
        values.append(ema.current_decay())
    assert values == pytest.approx([0.1, 2 / 11, 11 / 20, 0.999])


def test_ema_and_mixup_resume_bit_exact(tmp_path: Path) -> None:
    straight, s_trainer = _fit(tmp_path / "a", 3, ema_a := EMA(decay=0.9))
    _, first = _fit(tmp_path / "b", 1, EMA(decay=0.9))
    path = tmp_path / "epoch1.ckpt"
    first.save_checkpoint(path)
    resumed, r_trainer = _fit(tmp_path / "c", 3, ema_c := EMA(decay=0.9), ckpt=path)
    assert r_trainer.global_step == s_trainer.global_step == 12
    for (key, a), b in zip(straight.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), key
    assert ema_a.average is not None and ema_c.average is not None
    for (key, a), b in zip(ema_a.average.module.state_dict().items(),
                           ema_c.average.module.state_dict().values()):
        assert torch.equal(a, b), key
    assert ema_c.updates == ema_a.updates == 12


@pytest.mark.skipif(sys.platform == "win32", reason="inductor needs a C++ compiler")
def test_ema_keeps_updating_under_torch_compile(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 5))
    snaps = _Snapshots()
    ema = EMA(decay=0.5)
    module, _ = _fit(tmp_path, 1, ema, net=net, extra=[snaps], compile=True)
    assert module._compiled is not None  # the compiled network trained
    assert ema.average is not None
    keys = list(ema.average.module.state_dict())
    assert not any("_orig_mod" in k for k in keys)
    expected = snaps.states[0]["1.weight"]
    for state in snaps.states[1:]:
        expected = 0.5 * expected + 0.5 * state["1.weight"]
    torch.testing.assert_close(ema.average.module.state_dict()["1.weight"], expected)
    assert not torch.equal(snaps.states[0]["1.weight"], snaps.states[-1]["1.weight"])


# ------------------------------------------------------------------ optimizers
def test_lamb_and_lars_build_and_checkpoints_naming_them_load(tmp_path: Path) -> None:
    timm = _timm()
    params = [torch.nn.Parameter(torch.randn(3, 3))]
    assert isinstance(lamb(params, lr=5e-3, weight_decay=0.01), timm.optim.Lamb)
    assert isinstance(lars(params, lr=0.1), timm.optim.Lars)
    model = {"_target_": "classicnets.models.create_model", "name": "lenet5",
             "num_classes": 10, "in_channels": 1, "input_size": 32}
    opt = {"_target_": "classicnets.training.optim.lamb", "_partial_": True, "lr": 5e-3}
    module = ImageClassifier(model, optimizer=opt)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    data = DataLoader(TensorDataset(torch.randn(4, 1, 32, 32), torch.randint(0, 10, (4,))),
                      batch_size=4)
    trainer.fit(module, train_dataloaders=data)
    assert isinstance(trainer.optimizers[0], timm.optim.Lamb)
    path = tmp_path / "lamb.ckpt"
    trainer.save_checkpoint(path)
    loaded = ImageClassifier.load_checkpoint(path)  # its optimizer target is allowed
    assert loaded.hparams.optimizer["_target_"] == "classicnets.training.optim.lamb"
    check_targets({"optimizer": {"_target_": "classicnets.training.optim.lars"}}, path)
    for target in ("timm.optim.Lamb", "classicnets.training.optim.build_scheduler", "os.system"):
        with pytest.raises(UntrustedCheckpointError, match="names"):
            check_targets({"optimizer": {"_target_": target}}, path)


def test_lamb_without_timm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm.optim", None)
    with pytest.raises(ImportError, match=r"pip install 'classicnets\[timm\]'"):
        lamb([torch.nn.Parameter(torch.zeros(2))])


# ------------------------------------------------------------------ weight decay
def test_no_weight_decay_covers_vit_tokens_norms_and_biases() -> None:
    net = create_model("vit_tiny_patch4_32", num_classes=10, in_channels=3, input_size=32)
    decay, exempt = param_groups(net, 0.05, no_decay_norm_bias=True)
    ids = {id(p) for p in exempt["params"]}
    names = {n for n, p in net.named_parameters() if id(p) in ids}
    assert {"cls_token", "pos_embed"} <= names
    assert all(n in ("cls_token", "pos_embed") or p.ndim == 1 for n, p in net.named_parameters()
               if id(p) in ids)
    assert any("norm" in n or "ln" in n for n in names) and any(n.endswith("bias") for n in names)
    # every weight matrix (and the patch projection) is still decayed
    decayed = {id(p) for p in decay["params"]}
    assert all(id(p) in decayed for n, p in net.named_parameters()
               if p.ndim > 1 and n not in ("cls_token", "pos_embed"))
    assert (decay["weight_decay"], exempt["weight_decay"]) == (0.05, 0.0)


def test_no_weight_decay_norm_exempts_norm_layers_only() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.Flatten(), torch.nn.LayerNorm(4 * 6 * 6),
                              torch.nn.Linear(4 * 6 * 6, 5))
    decay, exempt = param_groups(net, 2e-5, no_decay_norm_bias="norm")
    norm = [net[1].weight, net[1].bias, net[3].weight, net[3].bias]
    assert [id(p) for p in exempt["params"]] == [id(p) for p in norm]
    # the conv and linear biases decay, as with torchvision's norm_weight_decay=0
    assert {id(net[0].bias), id(net[4].bias)} <= {id(p) for p in decay["params"]}
    with pytest.raises(ValueError, match="no_weight_decay_norm_bias='bias' is not one of"):
        ImageClassifier(_net(), num_classes=5, no_weight_decay_norm_bias="bias")
