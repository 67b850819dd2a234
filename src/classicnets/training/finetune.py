"""Fine-tuning a pretrained network: a new head, a frozen backbone for the first epochs, a
smaller learning rate for the backbone, BatchNorm frozen or not (``module.finetune``).

:class:`ImageClassifier` builds the optimizer's parameter groups (head at ``optimizer.lr``,
backbone at ``backbone_lr_mult`` × that) and adds :class:`FineTune` to the Trainer
(``configure_callbacks``), which freezes and unfreezes at the start of every epoch.

Why not Lightning's ``BaseFinetuning``: it freezes before the model is wrapped for DDP, so the
parameters it unfreezes later are not in DDP's gradient reducer, and it adds the backbone to
the optimizer as a new parameter group, which the learning-rate schedule built before never
sees. Here every parameter is in the optimizer and in DDP from the start; a frozen parameter
has ``requires_grad=False``, gets no gradient, and the optimizer skips it (no update, no
weight decay, no momentum); under DDP the callback makes the reducer tolerate the parameters
that get no gradient while frozen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

__all__ = ["FineTune", "FineTuneConfig", "head_parameter_names", "split_head_backbone"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class FineTuneConfig:
    """``module.finetune``: ``freeze_backbone_epochs`` epochs of training the head alone,
    then everything; the backbone's learning rate is ``backbone_lr_mult`` × the head's;
    ``freeze_bn`` keeps every BatchNorm of the backbone fixed throughout (running statistics
    and scale/shift), as is common when fine-tuning with small batches."""

    freeze_backbone_epochs: int = 0
    backbone_lr_mult: float = 1.0
    freeze_bn: bool = False

    @classmethod
    def parse(cls, cfg: Mapping[str, Any] | None) -> FineTuneConfig:
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"freeze_backbone_epochs", "backbone_lr_mult", "freeze_bn"}
        if unknown:
            raise ValueError(f"module.finetune has no option {', '.join(sorted(unknown))}; it "
                             "has freeze_backbone_epochs, backbone_lr_mult, freeze_bn")
        out = cls(int(cfg.get("freeze_backbone_epochs", 0)),
                  float(cfg.get("backbone_lr_mult", 1.0)), bool(cfg.get("freeze_bn", False)))
        if out.freeze_backbone_epochs < 0 or out.backbone_lr_mult < 0:
            raise ValueError("module.finetune.freeze_backbone_epochs and backbone_lr_mult must "
                             f"be >= 0, got {out}")
        return out

    @property
    def active(self) -> bool:
        """Whether anything differs from ordinary training (the defaults change nothing)."""
        return self.freeze_backbone_epochs > 0 or self.backbone_lr_mult != 1.0 or self.freeze_bn


def head_parameter_names(net: nn.Module, model_cfg: Mapping[str, Any] | None) -> set[str]:
    """Names of the classifier head's parameters (main and auxiliary heads).

    With the network's config: the parameters whose shapes change with ``num_classes`` (the
    network built again on the meta device with one class more), which holds for any
    architecture. Without it: the parameters of the last module that has any.
    """
    if model_cfg and "num_classes" in model_cfg:
        from classicnets.instantiate import instantiate_clean

        cfg = {**model_cfg, "num_classes": int(model_cfg["num_classes"]) + 1}
        cfg.pop("pretrained", None)
        with torch.device("meta"):
            other = instantiate_clean(cfg)
        names = {n for (n, p), (_, q) in zip(net.named_parameters(), other.named_parameters())
                 if p.shape != q.shape}
    else:
        last = [n.rpartition(".")[0] for n, _ in net.named_parameters()][-1]
        names = {n for n, _ in net.named_parameters() if n.rpartition(".")[0] == last}
    if not names:
        raise ValueError("could not find the classifier head of the network")
    return names


def split_head_backbone(groups: Iterable[dict[str, Any]], net: nn.Module, head: set[str],
                        lr: float, backbone_lr_mult: float) -> list[dict[str, Any]]:
    """Each parameter group split into a head part (``lr``) and a backbone part
    (``lr × backbone_lr_mult``), named ``head``/``backbone`` for the learning-rate monitor.
    Head groups come first: schedules read the base rate from the first group."""
    head_ids = {id(p) for n, p in net.named_parameters() if n in head}
    groups = list(groups)
    heads, backbones = [], []
    for i, group in enumerate(groups):
        # names must be unique (the learning-rate monitor logs one curve per name)
        suffix = "" if i == 0 else ("_no_decay" if group.get("weight_decay") == 0.0 and len(
            groups) == 2 else f"_{i}")
        for part, scale, into in (("head", 1.0, heads), ("backbone", backbone_lr_mult,
                                                          backbones)):
            params = [p for p in group["params"] if (id(p) in head_ids) == (part == "head")]
            if params:
                into.append({**group, "params": params, "lr": lr * scale,
                             "name": part + suffix})
    return heads + backbones


class FineTune(Callback):
    """Freezes the backbone for the first ``freeze_backbone_epochs`` epochs (and its
    BatchNorm layers throughout with ``freeze_bn``); decided again at the start of every epoch
    from the epoch number, so a resumed run is in the right phase."""

    def __init__(self, config: FineTuneConfig, head: set[str]) -> None:
        self.config, self.head = config, head

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = trainer.strategy
        if stage == "fit" and self.config.freeze_backbone_epochs and isinstance(
                strategy, DDPStrategy):
            # Called before the model is wrapped: frozen parameters produce no gradient, and
            # DDP's reducer would wait for them forever unless told that some may be unused.
            strategy._ddp_kwargs["find_unused_parameters"] = True

    def frozen(self, epoch: int) -> bool:
        return epoch < self.config.freeze_backbone_epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net: nn.Module = pl_module.net
        frozen = self.frozen(trainer.current_epoch)
        bn_params: set[str] = set()
        fix_bn = frozen or self.config.freeze_bn
        for name, module in net.named_modules():
            if isinstance(module, _NORMS):
                # eval: running statistics stay as loaded. Lightning keeps a module's mode from
                # epoch to epoch, so an unfrozen BN is set back to training explicitly
                module.train(pl_module.training and not fix_bn)
                if fix_bn:
                    bn_params |= {f"{name}.{p}" if name else p for p, _ in
                                  module.named_parameters(recurse=False)}
        for name, param in net.named_parameters():
            backbone = name not in self.head
            param.requires_grad_(not (backbone and (frozen or name in bn_params)))
