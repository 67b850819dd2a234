"""Dashboards: what a run shows in W&B and TensorBoard beyond the module's own metrics.

One callback, :class:`Dashboard`, configured in ``conf/callbacks/dashboard.yaml``:

* confusion matrices of the validation set (every N epochs) and of the final test, with
  per-class accuracy, under the dataset's class names;
* a predictions table (a fixed, seeded sample of test images with their true label and top-5
  predictions) and a gallery of the test set's most confident mistakes;
* per-epoch wall time, training images/s and (optionally) the mean gradient norm, as scalars
  every logger gets (CSV included).

It is rank-aware and keeps the training loop's fast path: the numbers are collected on the
device in the batch-end hooks (a ``C x C`` int64 matrix of counts, fixed-size
sample buffers, a running top-K of mistakes) with no read-back per step; at epoch end every rank
joins the reduction (matrices summed over ranks, samples gathered) and global rank 0 renders and
writes through the loggers' own APIs: ``wandb.plot`` / ``wandb.Table`` / ``wandb.Image`` for
W&B, ``SummaryWriter.add_image`` / ``add_scalar`` for TensorBoard (images drawn with Pillow, so
matplotlib is not needed). Without a W&B or TensorBoard logger it collects nothing.

Under DDP, Lightning's DistributedSampler (and the fast loader) pads each rank's shard by
wrapping around to the start of the split; the callback knows where each sample sits in the
split and drops those repeats, so the test matrix counts every test sample exactly once. The
module's ``test/acc`` does count the repeats (at most world size - 1 samples), so the two may
differ by that much under DDP; in one process they agree exactly.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = ["Dashboard", "render_confusion_matrix", "render_grid"]

log = logging.getLogger(__name__)
STAGES = ("val", "test")
_RIGHT, _WRONG = (0, 140, 0), (200, 0, 0)
_DARK = np.array([8, 48, 107], dtype=np.float64)  # the darkest cell of the matrix (dark blue)


@dataclass
class _Shard:
    """Where this process's evaluation samples sit in the (unshuffled) split.

    Rank ``r`` of ``W`` data-parallel replicas is given positions ``r, r + W, r + 2W, ...``,
    padded by wrapping around so that every rank has ``ceil(N / W)`` samples: local sample
    ``i`` is position ``i * W + r``, and positions ``>= N`` are repeats.
    """

    size: int | None  # samples in the split; None: unknown, nothing is dropped
    replicas: int = 1
    rank: int = 0
    seen: int = 0

    def advance(self, n: int) -> tuple[int, int]:
        """(local index of the next sample, how many of the next ``n`` are not repeats)."""
        start = self.seen
        self.seen += n
        if self.size is None:
            return start, n
        real = max(0, -(-(self.size - self.rank) // self.replicas))  # ceil((N - r) / W)
        return start, max(0, min(n, real - start))


@dataclass
class _Picked:
    """Device buffers of picked test samples: the fixed sample, or the running worst mistakes."""

    images: Tensor  # uint8 (n, C, H, W), un-normalised for display
    labels: Tensor  # int64 (n,)
    top_idx: Tensor  # int64 (n, k)
    top_prob: Tensor  # float32 (n, k)
    position: Tensor  # int64 (n,): index in the test split, -1 for an empty slot
    score: Tensor  # float32 (n,): probability of the wrong top-1 class; -1: not a mistake

    @classmethod
    def empty(cls, n: int, image: Tensor, k: int) -> _Picked:
        dev = image.device
        return cls(torch.zeros((n, *image.shape), dtype=torch.uint8, device=dev),
                   torch.zeros(n, dtype=torch.int64, device=dev),
                   torch.zeros((n, k), dtype=torch.int64, device=dev),
                   torch.zeros((n, k), dtype=torch.float32, device=dev),
                   torch.full((n,), -1, dtype=torch.int64, device=dev),
                   torch.full((n,), -2.0, dtype=torch.float32, device=dev))

    def fields(self) -> dict[str, Tensor]:
        return dict(self.__dict__)


class Dashboard(Callback):
    """Confusion matrices, per-class accuracy, prediction tables, mistake galleries and speed.

    Args:
        confusion_every_n_epochs: validation confusion matrix every N epochs and at the last
            one (0: never); the test one is always drawn.
        max_classes: up to this many classes the matrix is an interactive W&B chart and the
            per-class accuracies are TensorBoard scalars; above it, an image and a table.
        num_predictions: test images in the predictions table (0: no table).
        num_mistakes: most confident wrong test predictions in the gallery (0: none).
        top_k: predictions listed per image (capped at the number of classes).
        log_speed: log ``time/epoch_s`` (training + validation) and ``time/images_per_s``.
        log_grad_norm: log ``train/grad_norm``, the epoch mean of the total L2 norm of the
            gradients before each optimizer step (before clipping); one small reduction per step
            on the device, no read-back.
        tile_size: side in pixels of each image in the drawn grids.
        seed: draws the fixed sample of test images (the same images every run and epoch).
    """

    def __init__(self, *, confusion_every_n_epochs: int = 5, max_classes: int = 100,
                 num_predictions: int = 32, num_mistakes: int = 16, top_k: int = 5,
                 log_speed: bool = True, log_grad_norm: bool = False, tile_size: int = 96,
                 seed: int = 0) -> None:
        for key, value, low in (("confusion_every_n_epochs", confusion_every_n_epochs, 0),
                                ("max_classes", max_classes, 0),
                                ("num_predictions", num_predictions, 0),
                                ("num_mistakes", num_mistakes, 0), ("top_k", top_k, 1),
                                ("tile_size", tile_size, 16)):
            if int(value) < low:
                raise ValueError(f"callbacks.dashboard.{key} must be >= {low}, got {value}")
        self.confusion_every_n_epochs = int(confusion_every_n_epochs)
        self.max_classes = int(max_classes)
        self.num_predictions, self.num_mistakes = int(num_predictions), int(num_mistakes)
        self.top_k, self.tile_size, self.seed = int(top_k), int(tile_size), int(seed)
        self.log_speed, self.log_grad_norm = bool(log_speed), bool(log_grad_norm)
        self._media = False  # a W&B or TensorBoard logger to draw for
        self._scalars = False  # any logger at all
        self._said_no_logger = False
        self._num_classes = 0
        self._names: list[str] = []
        self._collect = dict.fromkeys(STAGES, False)
        self._cm: dict[str, Tensor] = {}
        self._shards: dict[str, _Shard] = {}
        # the fixed sample: its slots' local indices on this rank, sorted, on host and device
        self._mine_local: list[int] = []
        self._mine_dev: tuple[Tensor, Tensor] | None = None
        self._sample: _Picked | None = None
        self._mistakes: _Picked | None = None
        self._picking: bool | None = None
        self._mean_std: tuple[Tensor, Tensor] | None = None
        self._epoch_t0: float | None = None
        self._train_t1: float | None = None
        self._train_images = 0
        self._grad_sum: Tensor | None = None
        self._grad_steps = 0

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        loggers = trainer.loggers
        # the same answer on every rank (all ranks build the same loggers), so every rank
        # joins the same collectives at epoch end
        self._media = any(isinstance(lg, (WandbLogger, TensorBoardLogger)) for lg in loggers)
        self._scalars = bool(loggers)
        if not self._media and not self._said_no_logger:
            self._said_no_logger = True
            rank_zero_info("dashboard: no W&B or TensorBoard logger (logger=wandb, tensorboard or "
                           "many), so no confusion matrices, tables or images"
                           + ("" if loggers else "; no logger at all, so no scalars either"))
        num = getattr(pl_module, "num_classes", None) or getattr(trainer.datamodule,
                                                                 "num_classes", None)
        self._num_classes = int(num or 0)
        names = [str(c) for c in getattr(trainer.datamodule, "classes", None) or []]
        self._names = names if len(names) == self._num_classes else [
            str(i) for i in range(self._num_classes)]

    # ------------------------------------------------------------------ speed, gradient norm
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_t0, self._train_t1, self._train_images = time.perf_counter(), None, 0
        self._grad_sum, self._grad_steps = None, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.log_speed:
            self._train_images += _batch_len(batch)  # a shape: host metadata, no read-back

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if not (self.log_grad_norm and self._scalars):
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0).detach()
            self._grad_sum = norm if self._grad_sum is None else self._grad_sum + norm
            self._grad_steps += 1

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # validation inside a training epoch ends its training part
        if (trainer.state.fn == "fit" and not trainer.sanity_checking
                and self._epoch_t0 is not None and self._train_t1 is None):
            self._train_t1 = _now(pl_module.device)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self._scalars and trainer.is_global_zero):
            return
        # rank 0's clock and counts (all ranks step in lockstep); logged by rank 0 only
        if self.log_speed and self._epoch_t0 is not None:
            end = _now(pl_module.device)
            train_s = (self._train_t1 or end) - self._epoch_t0
            pl_module.log("time/epoch_s", end - self._epoch_t0, rank_zero_only=True)
            if train_s > 0 and self._train_images:
                replicas = _replicas(trainer)[0]
                pl_module.log("time/images_per_s", self._train_images * replicas / train_s,
                              rank_zero_only=True)
        if self._grad_sum is not None and self._grad_steps:
            pl_module.log("train/grad_norm", self._grad_sum / self._grad_steps,
                          rank_zero_only=True)

    # ------------------------------------------------------------------ evaluation epochs
    def _due(self, trainer: L.Trainer, stage: str) -> bool:
        if not (self._media and self._num_classes) or trainer.sanity_checking:
            return False
        if stage == "test" or trainer.state.fn != "fit":
            return True
        every = self.confusion_every_n_epochs
        epoch = trainer.current_epoch + 1
        return every > 0 and (epoch % every == 0 or epoch == trainer.max_epochs)

    def _epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._collect[stage] = self._due(trainer, stage)
        if not self._collect[stage]:
            return
        c = self._num_classes
        self._cm[stage] = torch.zeros(c * c, dtype=torch.int64, device=pl_module.device)
        replicas, rank = _replicas(trainer)
        shard = self._shards[stage] = _Shard(_split_size(trainer, stage), replicas, rank)
        if stage != "test":
            return
        self._sample = self._mistakes = self._picking = None  # decided at the first batch
        self._mean_std = _mean_std(trainer.datamodule, pl_module.device)
        self._mine_local, self._mine_dev = [], None
        if self.num_predictions and shard.size:
            g = torch.Generator().manual_seed(self.seed)
            chosen = torch.randperm(shard.size, generator=g)[: self.num_predictions]
            chosen = chosen.sort().values.tolist()
            mine = [((p - rank) // replicas, slot) for slot, p in enumerate(chosen)
                    if p % replicas == rank]
            self._mine_local = [local for local, _ in mine]
            # made once per epoch: building index tensors per batch would copy host to device
            self._mine_dev = (torch.tensor(self._mine_local, dtype=torch.int64,
                                           device=pl_module.device),
                              torch.tensor([slot for _, slot in mine], dtype=torch.int64,
                                           device=pl_module.device))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start(trainer, pl_module, "test")

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if self._collect["val"] and dataloader_idx == 0:
            self._update("val", outputs, batch)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                          outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        if self._collect["test"] and dataloader_idx == 0:
            self._update("test", outputs, batch)

    def _update(self, stage: str, outputs: Any, batch: Any) -> None:
        logits = outputs.get("logits") if isinstance(outputs, dict) else outputs
        if not isinstance(logits, Tensor) or logits.ndim != 2:
            raise TypeError(f"the dashboard needs the logits: the module's {stage}_step must "
                            "return them (ImageClassifier does); or turn the dashboard off "
                            "with ~callbacks.dashboard")
        x, y = batch[0], batch[1]
        start, real = self._shards[stage].advance(int(y.shape[0]))
        if stage == "test" and self._picking is None:
            # at the first batch, when the image size is known; on every rank alike
            k = min(self.top_k, logits.shape[1])
            self._picking = x.ndim == 4
            if self._picking and self.num_predictions and self._mine_dev is not None:
                self._sample = _Picked.empty(self.num_predictions, x[0], k)
            if self._picking and self.num_mistakes:
                self._mistakes = _Picked.empty(self.num_mistakes, x[0], k)
        if real == 0:
            return
        logits, x, y = logits[:real].detach(), x[:real], y[:real]
        c = logits.shape[1]
        # index_add_, not bincount: on a GPU bincount reads the largest index back to size its
        # output, a sync per step; the matrix here has a fixed size
        cells = y * c + logits.argmax(1)
        self._cm[stage].index_add_(0, cells, torch.ones_like(cells))
        if stage == "test" and self._picking:
            self._pick(logits, x, y, start, real)

    def _pick(self, logits: Tensor, x: Tensor, y: Tensor, start: int, real: int) -> None:
        replicas, rank = self._shards["test"].replicas, self._shards["test"].rank
        k = min(self.top_k, logits.shape[1])
        # the fixed sample: which of its slots fall in this batch is known on the host
        lo = bisect.bisect_left(self._mine_local, start)
        hi = bisect.bisect_left(self._mine_local, start + real)
        if hi > lo and self._sample is not None and self._mine_dev is not None:
            local, slots = self._mine_dev[0][lo:hi] - start, self._mine_dev[1][lo:hi]
            prob, idx = logits.index_select(0, local).float().softmax(1).topk(k)
            s = self._sample
            s.images.index_copy_(0, slots, self._display(x.index_select(0, local)))
            s.labels.index_copy_(0, slots, y.index_select(0, local))
            s.top_idx.index_copy_(0, slots, idx)
            s.top_prob.index_copy_(0, slots, prob)
            s.position.index_copy_(0, slots, (local + start) * replicas + rank)
        m, n = self._mistakes, self.num_mistakes
        if m is None:
            return
        # the worst mistakes: a running top-K by the wrong prediction's probability
        prob, idx = logits.float().softmax(1).topk(k)
        score = torch.where(idx[:, 0] != y, prob[:, 0], torch.full_like(prob[:, 0], -1.0))
        cand_score, cand = score.topk(min(n, real))
        merged = torch.cat([m.score, cand_score])
        keep = merged.topk(n).indices
        fresh = {"images": self._display(x.index_select(0, cand)),
                 "labels": y.index_select(0, cand), "top_idx": idx.index_select(0, cand),
                 "top_prob": prob.index_select(0, cand),
                 "position": (cand + start) * replicas + rank, "score": cand_score}
        for name, value in fresh.items():
            setattr(m, name, torch.cat([getattr(m, name), value]).index_select(0, keep))

    def _display(self, x: Tensor) -> Tensor:
        """Normalised network inputs back to uint8 pixels."""
        x = x.detach().float()
        if self._mean_std is not None and self._mean_std[0].shape[1] == x.shape[1]:
            mean, std = self._mean_std
            x = x * std + mean
        else:  # statistics unknown: stretch each image to the full range
            lo = x.amin(dim=(1, 2, 3), keepdim=True)
            x = (x - lo) / (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp(min=1e-8)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._collect["val"]:
            self._finish(trainer, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._collect["test"]:
            self._finish(trainer, "test")

    def _finish(self, trainer: L.Trainer, stage: str) -> None:
        """Reduce over ranks (every rank calls this) and draw on global rank 0."""
        self._collect[stage] = False
        c = self._num_classes
        cm = trainer.strategy.reduce(self._cm.pop(stage), reduce_op="sum")
        # model-parallel replicas (trainer=towers) run each sample on several ranks
        copies = max(1, trainer.world_size // _replicas(trainer)[0])
        cm = (cm // copies).view(c, c).cpu()
        sample = mistakes = None
        if stage == "test":
            if self._sample is not None:
                sample = _merge(_gather(trainer, self._sample), by_score=False, limit=None)
            if self._mistakes is not None:
                mistakes = _merge(_gather(trainer, self._mistakes), by_score=True,
                                  limit=self.num_mistakes)
            self._sample = self._mistakes = None
        if trainer.is_global_zero:
            self._publish(trainer, stage, cm, sample, mistakes)

    # ------------------------------------------------------------------ writing
    def _publish(self, trainer: L.Trainer, stage: str, cm: Tensor,
                 sample: dict[str, Tensor] | None, mistakes: dict[str, Tensor] | None) -> None:
        names, step = self._names, trainer.global_step
        support = cm.sum(1)
        total = int(support.sum())
        acc = float(cm.diag().sum()) / max(1, total)
        per_class = [(names[i], float(cm[i, i]) / int(support[i]) if support[i] else None,
                      int(support[i])) for i in range(len(names))]
        when = f", epoch {trainer.current_epoch}" if stage == "val" else ""
        title = (f"{stage} confusion matrix{when}: accuracy {acc:.4f} of {total} "
                 "(rows: true, columns: predicted)")
        cm_image = render_confusion_matrix(cm, names, title)
        grids: dict[str, np.ndarray] = {}
        if sample is not None and len(sample["position"]):
            grids["test/predictions"] = render_grid(
                sample["images"], *self._captions(sample, mistakes=False), tile=self.tile_size)
        if mistakes is not None and len(mistakes["position"]):
            grids["test/worst_mistakes"] = render_grid(
                mistakes["images"], *self._captions(mistakes, mistakes=True), tile=self.tile_size)
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                self._to_wandb(lg, stage, step, cm, title, cm_image, per_class, sample, mistakes)
            elif isinstance(lg, TensorBoardLogger):
                self._to_tensorboard(lg, stage, step, cm_image, per_class, grids)
        log.info("dashboard: %s confusion matrix over %d samples (accuracy %.4f) logged",
                 stage, total, acc)

    def _captions(self, picked: dict[str, Tensor], mistakes: bool
                  ) -> tuple[list[list[str]], list[bool]]:
        names = self._names
        captions, right = [], []
        for i in range(len(picked["position"])):
            label, top = int(picked["labels"][i]), picked["top_idx"][i].tolist()
            probs = picked["top_prob"][i].tolist()
            lines = [f"#{int(picked['position'][i])}", f"true {_short(names[label])}"]
            if mistakes:
                lines.append(f"pred {_short(names[top[0]])}: {probs[0]:.2f}")
            else:
                lines += [f"{_short(names[c])}: {p:.2f}" for c, p in zip(top, probs)]
            captions.append(lines)
            right.append(top[0] == label)
        return captions, right

    def _to_wandb(self, lg: WandbLogger, stage: str, step: int, cm: Tensor, title: str,
                  cm_image: np.ndarray, per_class: list[tuple[str, float | None, int]],
                  sample: dict[str, Tensor] | None, mistakes: dict[str, Tensor] | None) -> None:
        import wandb

        names, c = self._names, len(self._names)
        data: dict[str, Any] = {}
        if c <= self.max_classes:
            rows = [[names[i], names[j], int(cm[i, j])] for i in range(c) for j in range(c)]
            table = wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=rows)
            # the chart wandb.plot.confusion_matrix draws, fed with counts instead of samples
            data[f"{stage}/confusion_matrix"] = wandb.plot.plot_table(
                "wandb/confusion_matrix/v1", table,
                {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
                {"title": title})
        else:  # a chart of c * c cells is beyond what W&B tables hold
            data[f"{stage}/confusion_matrix_image"] = wandb.Image(cm_image, caption=title)
        per = wandb.Table(columns=["class", "accuracy", "support"],
                          data=[list(row) for row in per_class])
        data[f"{stage}/per_class_accuracy"] = wandb.plot.bar(
            per, "class", "accuracy", title=f"{stage} accuracy per class")
        k = self._sample_k(sample, mistakes)
        if sample is not None and len(sample["position"]):
            columns = ["index", "image", "label", "prediction", "correct"]
            for r in range(1, k + 1):
                columns += [f"top{r}", f"prob{r}"]
            table = wandb.Table(columns=columns)
            for i in range(len(sample["position"])):
                label, top = int(sample["labels"][i]), sample["top_idx"][i].tolist()
                row: list[Any] = [int(sample["position"][i]), wandb.Image(self._pil(sample, i)),
                                  names[label], names[top[0]], top[0] == label]
                for cls, p in zip(top, sample["top_prob"][i].tolist()):
                    row += [names[cls], round(float(p), 6)]
                table.add_data(*row)
            data["test/predictions"] = table
        if mistakes is not None and len(mistakes["position"]):
            data["test/worst_mistakes"] = [
                wandb.Image(self._pil(mistakes, i), caption=(
                    f"#{int(mistakes['position'][i])}: true "
                    f"{names[int(mistakes['labels'][i])]}, predicted "
                    f"{names[int(mistakes['top_idx'][i][0])]} "
                    f"({float(mistakes['top_prob'][i][0]):.3f})"))
                for i in range(len(mistakes["position"]))]
        lg.experiment.log({**data, "trainer/global_step": step})

    @staticmethod
    def _sample_k(*picked: dict[str, Tensor] | None) -> int:
        return next((p["top_idx"].shape[1] for p in picked if p is not None), 0)

    def _pil(self, picked: dict[str, Tensor], i: int) -> Image.Image:
        """One picked image, enlarged (nearest neighbour) to the tile size for legibility."""
        return _fit(_to_pil(picked["images"][i]), self.tile_size)

    def _to_tensorboard(self, lg: TensorBoardLogger, stage: str, step: int,
                        cm_image: np.ndarray, per_class: list[tuple[str, float | None, int]],
                        grids: dict[str, np.ndarray]) -> None:
        writer = lg.experiment
        writer.add_image(f"{stage}/confusion_matrix", cm_image, step, dataformats="HWC")
        if len(per_class) <= self.max_classes:
            for name, acc, _ in per_class:
                if acc is not None:
                    writer.add_scalar(f"{stage}/class_acc/{_tag(name)}", acc, step)
        for tag, grid in grids.items():
            writer.add_image(tag, grid, step, dataformats="HWC")
        writer.flush()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the final test metrics in the W&B run summary (what the runs table shows)
        if not trainer.is_global_zero:
            return
        final = {k: float(v) for k, v in trainer.callback_metrics.items()
                 if k.startswith("test/") and torch.is_tensor(v) and v.numel() == 1}
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger) and final:
                lg.experiment.summary.update(final)


# ---------------------------------------------------------------------- helpers
def _batch_len(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    return int(first.shape[0]) if isinstance(first, Tensor) and first.ndim else 0


def _now(device: torch.device) -> float:
    # the GPU runs behind the host; once per epoch, wait for it so the clock is honest
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _replicas(trainer: L.Trainer) -> tuple[int, int]:
    """(data-parallel replicas, this process's replica), as the samplers shard the data."""
    kwargs = getattr(trainer.strategy, "distributed_sampler_kwargs", None) or {}
    return (int(kwargs.get("num_replicas", trainer.world_size)),
            int(kwargs.get("rank", trainer.global_rank)))


def _split_size(trainer: L.Trainer, stage: str) -> int | None:
    """Samples in the split (the datamodule's, else the loader's dataset); None if unknown."""
    candidates = [getattr(trainer.datamodule, f"{stage}_set", None)]
    loaders = trainer.test_dataloaders if stage == "test" else trainer.val_dataloaders
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    candidates.append(getattr(loaders, "dataset", None))
    for split in candidates:
        try:
            return len(split)  # type: ignore[arg-type]
        except TypeError:
            continue
    return None


def _mean_std(datamodule: Any, device: torch.device) -> tuple[Tensor, Tensor] | None:
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    if not mean or not std or len(mean) != len(std):
        return None
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1),
            torch.tensor(std, device=device).view(1, -1, 1, 1))


def _gather(trainer: L.Trainer, picked: _Picked) -> dict[str, Tensor]:
    """Every rank's buffers, stacked along the first dimension, on the host."""
    out = {}
    for name, value in picked.fields().items():
        if trainer.world_size > 1:  # every rank must call all_gather, in the same order
            value = trainer.strategy.all_gather(value).flatten(0, 1)
        out[name] = value.cpu()
    return out


def _merge(fields: dict[str, Tensor], *, by_score: bool, limit: int | None
           ) -> dict[str, Tensor]:
    """Filled slots only, each test position once, in position (or descending score) order."""
    keep = fields["position"] >= 0
    if by_score:
        keep &= fields["score"] >= 0  # a real mistake
    order = torch.nonzero(keep).flatten().tolist()
    key = (lambda i: -float(fields["score"][i])) if by_score else (
        lambda i: int(fields["position"][i]))
    seen: set[int] = set()
    chosen = []
    for i in sorted(order, key=key):
        pos = int(fields["position"][i])
        if pos not in seen:  # a sample several ranks ran (towers) counts once
            seen.add(pos)
            chosen.append(i)
    chosen = chosen[:limit] if limit is not None else chosen
    index = torch.tensor(chosen, dtype=torch.int64)
    return {name: value.index_select(0, index) for name, value in fields.items()}


def _short(name: str, width: int = 12) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _tag(name: str) -> str:
    """A class name as a TensorBoard tag component."""
    return re.sub(r"[^\w.\-]+", "_", name) or "_"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _to_pil(image: Tensor) -> Image.Image:
    """A uint8 (C, H, W) tensor as an RGB image."""
    array = image.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], mode="L").convert("RGB")
    return Image.fromarray(array[:, :, :3], mode="RGB")


def _fit(pil: Image.Image, side: int) -> Image.Image:
    """Scale the longer side to ``side`` (nearest neighbour when enlarging keeps pixels crisp)."""
    scale = side / max(pil.size)
    size = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
    return pil.resize(size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR)


def render_confusion_matrix(cm: Tensor, names: list[str], title: str = "") -> np.ndarray:
    """Draw a confusion matrix (rows true, columns predicted) as an RGB ``(H, W, 3)`` array.

    Cells are shaded by the row-normalised fraction; with few enough classes each cell shows
    its count and the axes the class names.
    """
    c = cm.shape[0]
    counts = cm.to(torch.float64)
    frac = (counts / counts.sum(1, keepdim=True).clamp(min=1)).numpy()
    cell = max(1, min(48, 800 // max(c, 1)))
    labelled = cell >= 16
    font, small = _font(13), _font(max(8, min(13, cell // 3)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = (max(int(probe.textlength(_short(n), font=small)) for n in names) + 8
               if labelled and names else 0)
    title_h = 24
    left, top = label_w + 8, title_h + label_w + 4
    width = max(left + c * cell + 8, int(probe.textlength(title, font=font)) + 16)
    canvas = Image.new("RGB", (width, top + c * cell + 8), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 4), title, fill="black", font=font)
    shade = 255.0 - frac[..., None] * (255.0 - _DARK)
    cells = Image.fromarray(shade.round().astype(np.uint8), mode="RGB")
    canvas.paste(cells.resize((c * cell, c * cell), Image.Resampling.NEAREST), (left, top))
    if labelled:
        for i, name in enumerate(names):
            text = _short(name)
            y = top + i * cell + cell // 2
            draw.text((left - 4, y), text, fill="black", font=small, anchor="rm")
            # column labels, rotated: drawn on their own strip, then turned
            w = int(probe.textlength(text, font=small)) + 2
            strip = Image.new("RGB", (w, cell), "white")
            ImageDraw.Draw(strip).text((0, cell // 2), text, fill="black", font=small,
                                       anchor="lm")
            turned = strip.rotate(90, expand=True)
            canvas.paste(turned, (left + i * cell, top - 4 - w))
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    draw.text((left + j * cell + cell // 2, top + i * cell + cell // 2),
                              str(int(cm[i, j])), font=small, anchor="mm",
                              fill="white" if frac[i, j] > 0.5 else "black")
    return np.asarray(canvas)


def render_grid(images: Tensor, captions: list[list[str]], right: list[bool] | None = None, *,
                tile: int = 96, columns: int = 8) -> np.ndarray:
    """Draw uint8 ``(N, C, H, W)`` images in a grid with captions, as an ``(H, W, 3)`` array.

    ``right`` frames each image green (correct) or red (wrong).
    """
    n = len(images)
    font = _font(11)
    line_h = 13
    caption_h = line_h * max((len(c) for c in captions), default=0) + 4
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    pad = 6
    cell_w, cell_h = tile + pad, tile + caption_h + pad
    canvas = Image.new("RGB", (cols * cell_w + pad, rows * cell_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        x0, y0 = pad + (i % cols) * cell_w, pad + (i // cols) * cell_h
        pil = _fit(_to_pil(images[i]), tile - 4)
        if right is not None:
            draw.rectangle((x0, y0, x0 + tile - 1, y0 + tile - 1), outline=(
                _RIGHT if right[i] else _WRONG), width=2)
        canvas.paste(pil, (x0 + (tile - pil.width) // 2, y0 + (tile - pil.height) // 2))
        for j, line in enumerate(captions[i] if i < len(captions) else []):
            draw.text((x0, y0 + tile + 2 + j * line_h), line, fill="black", font=font)
    return np.asarray(canvas)
