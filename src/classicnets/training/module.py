"""The generic LightningModule: any registered network, any dataset."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from classicnets.checkpoints import (
    CheckpointError,
    check_targets,
    is_trusted,
    load_file,
    trusting,
)
from classicnets.instantiate import instantiate_clean
from classicnets.models.layers import ClassifierOutput
from classicnets.training.compiled_step import (
    CompiledOptimizerStep,
    check_trainer,
    compile_target,
    plain_hyperparameters,
    resolve_mode,
    uses_cudagraphs,
)
from classicnets.training.finetune import (
    FineTune,
    FineTuneConfig,
    head_parameter_names,
    split_head_backbone,
)
from classicnets.training.mixing import MixConfig, Mixer, one_hot_targets
from classicnets.training.optim import RESUME_SCHEDULES, build_scheduler, param_groups

log = logging.getLogger(__name__)

__all__ = ["ImageClassifier"]

NAN_POLICIES = ("stop", "skip")
LOSSES = ("cross_entropy", "bce")
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1,
                     "momentum": 0.9, "weight_decay": 5e-4}


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


class ImageClassifier(L.LightningModule):
    """Trains a classifier; knows nothing about its architecture.

    Args:
        model: the network's config (``_target_`` + arguments, e.g. ``conf/model/*.yaml``) —
            stored in the checkpoint so ``load_from_checkpoint(path)`` needs nothing else — or
            an ``nn.Module`` (then pass ``model=`` again when loading).
        optimizer: ``_partial_`` optimizer config (``conf/optimizer``); ``params`` are filled in.
        scheduler: ``conf/scheduler`` config (``name`` + options) or ``None``.
        label_smoothing: label smoothing (Szegedy et al., 2016): cross-entropy's own, or folded
            into the soft targets when ``mixup`` is on or ``loss=bce``.
        mixup: Mixup/CutMix of each training batch on its device
            (:class:`classicnets.training.mixing.MixConfig`: ``mixup_alpha``, ``cutmix_alpha``,
            ``prob``, ``switch_prob``); the loss then takes soft targets and ``train/acc``
            counts a prediction right when it is the largest class of the mixed target.
        loss: ``cross_entropy`` or ``bce`` (binary cross-entropy of each class's logit
            against its soft target, mean over samples × classes, as "ResNet strikes back",
            Wightman et al. 2021).
        bce_target_threshold: ``loss=bce``: targets above it become 1, the others 0 (after
            smoothing and mixing; RSB uses 0.2); ``None`` keeps the soft targets.
        aux_loss_weight: weight of each auxiliary head's loss (0.3 in GoogLeNet).
        compile: ``true``/``network``: ``torch.compile`` the network; ``step``: the whole
            training step (forward, loss, backward, optimizer update;
            :mod:`classicnets.training.compiled_step`). State dicts stay unprefixed either way.
        compile_mode: ``torch.compile`` mode; ``None``: ``reduce-overhead`` (CUDA graphs) for
            ``compile=step`` on CUDA, torch's default otherwise.
        channels_last: NHWC memory format for the network and its inputs.
        no_weight_decay_norm_bias: exempt from weight decay: ``True`` biases, norm parameters
            and the ViT's class token / position embedding; ``"norm"`` the norm layers'
            parameters only (torchvision's ``norm_weight_decay=0``); ``False`` none.
        nan_policy: a non-finite training loss: ``stop`` (the ``guard`` callback ends the run
            naming the step and the last good checkpoint) or ``skip`` (the step's gradients are
            zeroed on the device, so the batch changes no weight except through the optimizer's
            momentum/weight decay; counted as ``train/skipped_batches``).
        finetune: fine-tuning a pretrained network (``conf/module``: ``freeze_backbone_epochs``,
            ``backbone_lr_mult``, ``freeze_bn``; :mod:`classicnets.training.finetune`).
        num_classes: needed only when ``model`` is a module (else read from its config).
        resume_schedule: a resumed run whose horizon (``max_epochs``, ``max_steps``) differs
            from the one its per-step schedule was built for: ``auto`` (stretch while the
            schedule runs, a warm restart once it has ended), ``stretch``, ``keep`` or
            ``restart`` (:class:`classicnets.training.optim.HorizonSchedule`).

    A ``pretrained`` entry of the model config fills the network when it is built; it is not
    kept in the hyperparameters: the weights are in every checkpoint from then on, so loading
    one never fetches them again.
    """

    def __init__(
        self,
        model: Mapping[str, Any] | nn.Module,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        *,
        label_smoothing: float = 0.0,
        aux_loss_weight: float = 0.3,
        compile: bool | Literal["network", "step"] = False,
        compile_mode: str | None = None,
        channels_last: bool = False,
        no_weight_decay_norm_bias: bool | Literal["norm"] = False,
        nan_policy: str = "stop",
        finetune: Mapping[str, Any] | None = None,
        num_classes: int | None = None,
        resume_schedule: Literal["auto", "stretch", "keep", "restart"] = "auto",
        mixup: Mapping[str, Any] | None = None,
        loss: Literal["cross_entropy", "bce"] = "cross_entropy",
        bce_target_threshold: float | None = None,
    ) -> None:
        super().__init__()
        # plain containers in hparams: the checkpoint then rebuilds everything by itself
        optimizer = _plain(optimizer) or dict(DEFAULT_OPTIMIZER)
        scheduler = _plain(scheduler)
        finetune = _plain(finetune)
        mixup = _plain(mixup)
        if isinstance(model, nn.Module):
            self.save_hyperparameters(ignore=["model"], logger=False)
            self.net = model
            if num_classes is None:
                raise ValueError("pass num_classes= when model is an nn.Module")
        else:
            model = _plain(model)
            self.net = instantiate_clean(model)
            model = {k: v for k, v in model.items() if k != "pretrained"}
            self.save_hyperparameters(logger=False)
            num_classes = num_classes or model.get("num_classes")
            if num_classes is None:
                raise ValueError("the model config has no num_classes; pass num_classes=")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"module.label_smoothing must be in [0, 1), got {label_smoothing}")
        self._finetune = FineTuneConfig.parse(finetune)  # validated before anything runs
        if resume_schedule not in RESUME_SCHEDULES:
            raise ValueError(f"module.resume_schedule={resume_schedule!r} is not one of "
                             f"{', '.join(RESUME_SCHEDULES)}")
        if no_weight_decay_norm_bias not in (True, False, "norm"):
            raise ValueError(f"module.no_weight_decay_norm_bias={no_weight_decay_norm_bias!r} is "
                             f"not one of false, true, norm")
        if loss not in LOSSES:
            raise ValueError(f"module.loss={loss!r} is not one of {', '.join(LOSSES)}")
        if bce_target_threshold is not None:
            if loss != "bce":
                raise ValueError(f"module.bce_target_threshold={bce_target_threshold} applies to "
                                 f"module.loss=bce only (it is {loss}); set it to null")
            if not 0.0 <= float(bce_target_threshold) < 1.0:
                raise ValueError(f"module.bce_target_threshold={bce_target_threshold} must be in "
                                 f"[0, 1) (or null: soft targets)")
        mix = MixConfig.parse(mixup)  # validated before anything runs
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"module.nan_policy={nan_policy!r} is not one of "
                             f"{', '.join(NAN_POLICIES)}")
        self._compile_target = compile_target(compile)
        resolve_mode(compile_mode, self._compile_target, "cpu")  # a bad mode fails here
        self.num_classes = int(num_classes)
        self._mixer = Mixer(mix, self.num_classes, label_smoothing) if mix.active else None
        self._bce, self._bce_threshold = loss == "bce", bce_target_threshold
        top_k = min(5, self.num_classes)
        # no per-step input validation: its checks read values back from the GPU every step,
        # stalling the asynchronous queue (a NaN loss still shows as a NaN mean)
        metric = {"num_classes": self.num_classes, "average": "micro", "validate_args": False}
        self.val_acc = MulticlassAccuracy(**metric)
        self.test_acc = MulticlassAccuracy(**metric)
        self.val_acc5 = MulticlassAccuracy(top_k=top_k, **metric)
        self.test_acc5 = MulticlassAccuracy(top_k=top_k, **metric)
        self.val_loss, self.test_loss = (MeanMetric(nan_strategy="disable") for _ in range(2))
        # training loss/accuracy: running sums on the device (see training_step)
        self._train_sums: Tensor | None = None
        self._step_finite: Tensor | None = None  # nan_policy=skip: this step's losses finite
        self.val_acc_best = MaxMetric()
        self._restored_best: float | None = None  # from a checkpoint, applied at train start
        self._compiled: nn.Module | None = None
        # compile=step: forward + loss compiled as one function (see configure_model)
        self._compiled_loss: Any = None
        self._cudagraphs = False
        if channels_last:
            self.net.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ forward / loss
    def configure_model(self) -> None:
        if self.device_mesh is not None:  # a model-parallel strategy (trainer=towers)
            from classicnets.parallel import parallelize

            self.net = parallelize(self.net, self.device_mesh)
        target = self._compile_target
        if target is None or self._compiled is not None or self._compiled_loss is not None:
            return
        device = self._trainer.strategy.root_device.type if self._trainer is not None else "cpu"
        mode = resolve_mode(self.hparams.get("compile_mode"), target, device)
        # kept out of the module tree (plain attributes through object.__setattr__) so the
        # state dict has no `_orig_mod.` prefixes and loads into an uncompiled network
        if target == "network":
            object.__setattr__(self, "_compiled", torch.compile(self.net, mode=mode))
        else:
            object.__setattr__(self, "_compiled_loss",
                               torch.compile(self._forward_loss, mode=mode))
            self._cudagraphs = uses_cudagraphs(mode, device)

    def _forward_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Forward and loss of a training batch: what ``compile=step`` compiles as one graph."""
        return self.loss(self(x), y)

    def forward(self, x: Tensor) -> Tensor | ClassifierOutput:
        if self.hparams.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        net = self._compiled if self._compiled is not None and self.training else self.net
        return net(x)

    def loss(self, out: Tensor | ClassifierOutput, y: Tensor) -> tuple[Tensor, Tensor]:
        """The loss of the main logits plus ``aux_loss_weight`` × each aux head's.

        ``y``: class indices, or soft targets (one row per sample, summing to 1: mixed
        batches, where label smoothing is already folded in)."""
        criterion = self._criterion
        if isinstance(out, ClassifierOutput):
            loss = criterion(out.logits, y)
            for aux in out.aux_logits:
                loss = loss + self.hparams.aux_loss_weight * criterion(aux, y)
            return loss, out.logits
        return criterion(out, y), out

    def _criterion(self, logits: Tensor, y: Tensor) -> Tensor:
        ls = self.hparams.label_smoothing
        if self._bce:
            target = y if y.ndim == 2 else one_hot_targets(y, logits.shape[1], ls)
            if self._bce_threshold is not None:
                target = (target > self._bce_threshold).to(target.dtype)
            return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))
        if y.ndim == 2:  # soft targets: smoothing is in them already
            return F.cross_entropy(logits, y.to(logits.dtype))
        return F.cross_entropy(logits, y, label_smoothing=ls)

    # ------------------------------------------------------------------ steps
    def on_train_start(self) -> None:
        self.val_loss.reset()
        self.val_acc.reset()
        self.val_acc_best.reset()  # the sanity check's validation updated it
        if self._restored_best is not None and math.isfinite(self._restored_best):
            # a resumed run: the best of the epochs before the interruption still counts
            self.val_acc_best.update(torch.tensor(self._restored_best, device=self.device))
        if self._train_sums is not None:  # restored mid-epoch, on the CPU
            self._train_sums = self._train_sums.to(self.device)
        n = sum(p.numel() for p in self.net.parameters())
        for logger in self.loggers:
            logger.log_hyperparams({"model/params_total": n, "model/params_trainable": sum(
                p.numel() for p in self.net.parameters() if p.requires_grad)})

    # Host time per training step is what a fast GPU waits on, so the step does the least Python
    # it can: nothing is logged per step (metrics are logged once per epoch), and the training
    # loss/accuracy are two running sums on the device (torchmetrics' update wrappers cost more
    # Python than the step's own bookkeeping); they never read the GPU back, so its queue of
    # kernels never drains. `python src/benchmark.py sections=[template]` measures the rest.
    def on_train_epoch_start(self) -> None:
        self._train_sums = None

    def _mix(self, x: Tensor, y: Tensor, batch_idx: int) -> tuple[Tensor, Tensor]:
        """Mixup/CutMix of the batch (``module.mixup``), drawn from a generator seeded by the
        run's seed, the rank, the optimizer step and the batch index: a run resumed mid-epoch
        mixes exactly as the uninterrupted one."""
        assert self._mixer is not None
        key = (torch.initial_seed(), self.global_rank, self.global_step, batch_idx)
        return self._mixer(x, y, key)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self._mixer is not None:
            x, y = self._mix(x, y, batch_idx)
        if self._compiled_loss is None:
            loss, logits = self.loss(self(x), y)
        else:
            if self._cudagraphs:  # the previous step's graph outputs are no longer read
                torch.compiler.cudagraph_mark_step_begin()
            loss, logits = self._compiled_loss(x, y)
        if self._train_sums is None:
            # [sum of loss × batch size, correct predictions, samples, skipped batches]
            self._train_sums = torch.zeros(4, dtype=torch.float32, device=loss.device)
        sums, n = self._train_sums, y.shape[0]
        if y.ndim == 2:  # soft targets: right when the top logit is the mix's largest class
            y = y.argmax(dim=1)
        if self.hparams.nan_policy == "skip":
            with torch.no_grad():
                # decided on the device: a non-finite loss adds nothing and is counted
                correct = (logits.argmax(dim=1) == y).sum()
                finite = torch.isfinite(loss)
                ok = finite.float()
                sums[0].add_(torch.where(finite, loss.float(), 0.0) * n)
                sums[1].add_(correct * ok)
                sums[2].add_(ok * n)
                sums[3].add_(1.0 - ok)
                prior = self._step_finite
                self._step_finite = finite if prior is None else prior & finite
            return loss
        # nan_policy=stop: a non-finite loss makes the loss sum non-finite (divergence_flag).
        # Every sample counts, on the device: no value is read back, so the queue never drains
        with torch.no_grad():
            sums[0].add_(loss.detach(), alpha=n)
            sums[1].add_((logits.argmax(dim=1) == y).sum())
            sums[2].add_(n)
        return loss

    def divergence_flag(self) -> Tensor | None:
        """On the device, nonzero when a training loss of this epoch was NaN or infinite and
        not skipped (the epoch's loss sum is then not finite); None before the first step.
        The ``guard`` callback reads it back every few steps, not at every step."""
        if self._train_sums is None:
            return None
        return (~torch.isfinite(self._train_sums[0])).float()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._step_finite is None:  # nan_policy=stop
            return
        bad = (~self._step_finite).float()
        self._step_finite = None
        if self.trainer.world_size > 1:  # one rank's NaN gradients reached all ranks
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        keep = bad == 0
        for p in self.parameters():
            if p.grad is not None:  # where, not a multiply: 0 × NaN is NaN
                grad = p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad  # towers
                grad.copy_(torch.where(keep, grad, 0.0))

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        loss, logits = self.loss(self(x), y)
        getattr(self, f"{stage}_loss").update(loss)
        getattr(self, f"{stage}_acc").update(logits, y)
        getattr(self, f"{stage}_acc5").update(logits, y)
        return logits  # to the batch-end hooks (callbacks.dashboard); Lightning keeps none

    def _epoch_sums(self) -> Tensor | None:
        """A copy of the epoch's sums so far, [loss × samples, correct, samples, skipped
        batches]; None before the epoch's first step."""
        if self._train_sums is None:
            return None
        return self._train_sums.clone()

    def _log_train_epoch(self) -> None:
        """Log the epoch's mean training loss and accuracy, summed over all ranks."""
        sums = self._epoch_sums()
        if sums is None:
            sums = torch.zeros(4, device=self.device)
        totals = self.trainer.strategy.reduce(sums, reduce_op="sum")  # every rank calls it
        if self.hparams.nan_policy == "skip":
            self.log("train/skipped_batches", totals[3])
        seen = totals[2]
        if seen.item() == 0:  # an epoch without training steps (limit_train_batches=0)
            return
        self.log("train/loss", totals[0] / seen, prog_bar=True)
        self.log("train/acc", totals[1] / seen, prog_bar=True)

    def _log_epoch(self, stage: str) -> Tensor:
        """Log the stage's epoch metrics (compute() syncs DDP ranks) and reset them."""
        names = {"loss": f"{stage}_loss", "acc": f"{stage}_acc", "acc_top5": f"{stage}_acc5"}
        acc = getattr(self, names["acc"]).compute()
        for key, attr in names.items():
            metric = getattr(self, attr)
            value = acc if key == "acc" else metric.compute()
            self.log(f"{stage}/{key}", value, prog_bar=key != "acc_top5")
            metric.reset()
        return acc

    def on_train_epoch_end(self) -> None:
        self._log_train_epoch()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self._log_epoch("val"))
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        cfg = dict(self.hparams.optimizer)
        groups = param_groups(self.net, float(cfg.get("weight_decay", 0.0)),
                              no_decay_norm_bias=self.hparams.no_weight_decay_norm_bias)
        if self._finetune.active:  # head at optimizer.lr, backbone at backbone_lr_mult × it
            groups = split_head_backbone(groups, self.net, self._head(), float(cfg["lr"]),
                                         self._finetune.backbone_lr_mult)
        cfg["_partial_"] = True  # parameters are known only here
        optimizer = instantiate(cfg)(params=groups)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer._target_={cfg.get('_target_')} did not build a "
                             "torch.optim.Optimizer")
        if self._compile_target == "step":  # before the scheduler wraps optimizer.step
            device = self.trainer.strategy.root_device.type
            mode = resolve_mode(self.hparams.get("compile_mode"), "step", device)
            check_trainer(self.trainer, mode, device)
            CompiledOptimizerStep(optimizer, mode)
        sched = build_scheduler(optimizer, self.hparams.scheduler,
                                total_steps=int(self.trainer.estimated_stepping_batches),
                                max_epochs=max(1, int(self.trainer.max_epochs or 1)),
                                resume=self.hparams.get("resume_schedule", "auto"))
        return optimizer if sched is None else {"optimizer": optimizer, "lr_scheduler": sched}

    def _head(self) -> set[str]:
        return head_parameter_names(self.net, self.hparams.get("model"))

    def configure_callbacks(self) -> list[Callback]:
        if not self._finetune.active:
            return []
        return [FineTune(self._finetune, self._head())]

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # running state that is not in the state dict (torchmetrics states are not persistent,
        # and the weights must load into runs without these): a resumed run goes on from it
        state: dict[str, Any] = {"val_acc_best": float(self.val_acc_best.max_value)}
        sums = self._epoch_sums()
        if sums is not None:  # saved mid-epoch: the epoch's sums so far
            state["train_sums"] = sums.detach().cpu()
        checkpoint["classicnets"] = state
        if self._compile_target == "step":  # floats, as an eager run writes them
            plain_hyperparameters(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("classicnets") or {}
        self._restored_best = state.get("val_acc_best")
        sums = state.get("train_sums")
        # under DDP each rank summed its own batches; rank 0's sums stand for the part of the
        # epoch before the interruption (the other ranks' are not in the file)
        rank = self._trainer.global_rank if self._trainer is not None else 0
        if sums is not None and rank == 0 and len(sums) == 4:
            self._train_sums = sums.clone()

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any,  # type: ignore[override]
                             **kwargs: Any) -> ImageClassifier:
        """Lightning's ``load_from_checkpoint``, read weights-only (torch's default) and refused
        when its hyperparameters name code other than the network factory or a torch optimizer
        (rebuilding would call it; :func:`classicnets.checkpoints.check_targets`). The opt-outs
        are explicit and logged: ``trust_checkpoint=true`` (the entry points) or a caller's own
        ``weights_only`` set to false."""
        opted_out = kwargs.get("weights_only") is False
        if opted_out and not is_trusted():  # trusting() and load_file log their own opt-in
            log.warning("load_from_checkpoint with weights_only off: unpickling %s in full (code "
                        "in the file can run); only for a file you made or trust", checkpoint_path)
        trusted = opted_out or is_trusted()
        if not trusted and isinstance(checkpoint_path, str | Path):
            ckpt = load_file(checkpoint_path, mmap=True)
            check_targets(ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None,
                          checkpoint_path)
            del ckpt
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    @classmethod
    def load_checkpoint(cls, path: str | Path, *, trust: bool | None = None,
                        **kwargs: Any) -> ImageClassifier:
        """``load_from_checkpoint``, weights-only (:func:`classicnets.checkpoints.load_file`:
        ``trust=True`` is the logged opt-out), with errors that say what is wrong with
        ``path``."""
        path = Path(path).expanduser()
        if not path.exists():
            raise CheckpointError(
                f"checkpoint {path} does not exist; pass ckpt_path=<path to a .ckpt> (runs keep "
                f"theirs in logs/<task>/runs/<time>/checkpoints/)")
        trust = is_trusted() if trust is None else trust
        ckpt = load_file(path, trust=trust, mmap=True)  # refused here, before Lightning reads it
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
            raise CheckpointError(
                f"{path} is not a classicnets training checkpoint: it has no state_dict"
                + (" (it looks like a bare state dict: load weights with "
                   "model.pretrained=<file>)" if isinstance(ckpt, dict) and ckpt and all(
                       torch.is_tensor(v) for v in ckpt.values()) else ""))
        if "hyper_parameters" not in ckpt and "model" not in kwargs:
            raise CheckpointError(f"{path} has no hyper_parameters (not written by classicnets "
                                  f"from a model config); pass model= to rebuild its network")
        del ckpt
        try:
            with trusting(trust):  # load_file above logged the opt-in: once
                return cls.load_from_checkpoint(path, map_location="cpu",
                                                weights_only=not trust, **kwargs)
        except CheckpointError:  # ours name the file and the fix already
            raise
        except Exception as err:  # a network that does not match, a damaged file
            raise CheckpointError(
                f"{path} is not a loadable classicnets checkpoint ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); check the file is complete "
                f"and was written by classicnets") from None

