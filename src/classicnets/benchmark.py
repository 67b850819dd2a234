"""What `python src/benchmark.py` measures, given its composed Hydra config (conf/benchmark.yaml).

Sections (``sections=[...]``), each timed in this one process with its variants alternated
round by round (A window, B window, A, B, ...) so that drift of the machine (clock, other load)
hits every variant alike:

* ``template``: training images/s of :class:`ImageClassifier` under the Lightning Trainer vs a
  minimal PyTorch loop (zero_grad, forward, cross-entropy, backward, step) on the same network,
  the same pre-made batches already on the device, batch size, precision and optimizer. The
  Lightning windows are cut out of one ``fit`` by a callback at ``on_train_batch_end`` (each
  window spans whole steps: batch fetch, hooks, metric updates, logging, optimizer step); the
  plain loop's window runs between two of them.
* ``data``: images/s each data path of :class:`ImageDataModule` delivers (``loader=fast`` vs
  ``loader=torch``, batches moved to the device), and training images/s with each (plain loop).
* ``twins``: forward+backward time of our networks vs torchvision's (or timm's) on the same
  input, and peak memory on GPU.
* ``epoch``: one full epoch of synthetic CIFAR-sized images through the Trainer with the fast
  loader (wall seconds and images/s).
* ``towers``: AlexNet's two towers on two processes vs DDP of the whole network on the same two
  (:mod:`classicnets.parallel.bench`): step time and per-process parameter/optimizer memory.

Each window is preceded by untimed warm-up steps; reported are the medians over windows, and
ratios are medians of the per-round ratios (paired rounds, so slow drift cancels).
"""

from __future__ import annotations

import copy
import csv
import gc
import itertools
import logging
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

__all__ = ["CSV_COLUMNS", "SECTIONS", "Row", "resolve_settings", "run_benchmark"]

log = logging.getLogger(__name__)

SECTIONS = ("template", "data", "twins", "epoch", "towers")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
_GLOBAL_KNOBS = (
    "device",
    "sections",
    "precision",
    "channels_last",
    "compile",
    "threads",
    "matmul_precision",
    "cudnn_benchmark",
    "rounds",
    "warmup_steps",
    "window_steps",
    "min_window_s",
)
_TIMING_KNOBS = ("rounds", "warmup_steps", "window_steps", "min_window_s")


# ---------------------------------------------------------------------------- results
@dataclass
class Row:
    """One measured variant: a line of ``benchmark.csv``."""

    section: str
    case: str
    variant: str
    model: str = ""
    batch_size: int = 0
    image_size: int = 0
    precision: str = ""
    windows: int = 0
    steps: int = 0  # timed steps (batches) per window
    seconds: float = math.nan  # median window (or the epoch's) wall seconds
    images_per_s: float = math.nan
    ms_per_step: float = math.nan
    spread_pct: float = math.nan  # (max - min) / median of the windows' images/s
    ratio: float = math.nan  # images/s relative to the case's baseline variant (paired rounds)
    peak_mem_mib: float = math.nan
    params: int = 0
    param_mib: float = math.nan  # parameters held by one process (towers section)
    optimizer_mib: float = math.nan  # optimizer state held by one process (towers section)
    note: str = ""
    window_images_per_s: str = ""  # every window's images/s, in order ("a;b;c")


CSV_COLUMNS = [f.name for f in fields(Row)]


def _summarise(seconds: Sequence[float], steps: int, batch: int) -> dict[str, Any]:
    rates = [batch * steps / s for s in seconds]
    median_s = statistics.median(seconds)
    rate = batch * steps / median_s
    return {
        "seconds": median_s,
        "images_per_s": rate,
        "ms_per_step": 1e3 * median_s / steps,
        "spread_pct": 100.0 * (max(rates) - min(rates)) / rate,
        "windows": len(seconds),
        "steps": steps,
        "window_images_per_s": ";".join(f"{r:.6g}" for r in rates),
    }


def _paired_ratio(
    seconds: Sequence[float], baseline: Sequence[float], steps: int = 1, baseline_steps: int = 1
) -> float:
    """Median over rounds of (throughput / baseline throughput) within each round."""
    return statistics.median((steps / s) / (baseline_steps / b) for s, b in zip(seconds, baseline))


# ---------------------------------------------------------------------------- settings
def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _resolve_device(name: str) -> torch.device:
    name = str(name).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "gpu":
        name = "cuda"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={name} but torch.cuda.is_available() is False; use "
                "device=cpu (or device=auto)"
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device={name!r} is not one of auto, cpu, cuda (cuda:N)")


def resolve_settings(cfg: DictConfig) -> DictConfig:
    """The benchmark's settings: ``per_device.<cpu|cuda>`` overlaid with every non-null value
    of the config, and the global ``rounds``/``warmup_steps``/``window_steps``/``min_window_s``
    (when set) copied into each section."""
    device = _resolve_device(cfg.get("device", "auto"))
    profiles = OmegaConf.to_container(cfg.get("per_device") or {}, resolve=True)
    profile = profiles.get(device.type, {})
    user: dict[str, Any] = {}
    for key in (*_GLOBAL_KNOBS, *SECTIONS):
        if key in cfg:
            value = cfg[key]
            user[key] = (
                OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            )
    # every key of the config (nulls included), then the device's values, then the given ones
    s = OmegaConf.merge(
        OmegaConf.create(user), OmegaConf.create(profile), OmegaConf.create(_drop_none(user))
    )
    s.device = str(device)
    for knob in _TIMING_KNOBS:
        if s.get(knob) is not None:
            for section in SECTIONS:
                if section in s and knob in s[section]:
                    s[section][knob] = s[knob]
    sections = list(s.get("sections") or [])
    unknown = [x for x in sections if x not in SECTIONS]
    if unknown:
        raise ValueError(f"sections={unknown} unknown; choose from {', '.join(SECTIONS)}")
    if s.get("precision") not in PRECISIONS:
        raise ValueError(f"precision={s.get('precision')!r} is not one of {', '.join(PRECISIONS)}")
    for section in sections:
        sec = s.get(section) or {}
        for knob in _TIMING_KNOBS[:3]:
            if knob in sec and (sec[knob] is None or int(sec[knob]) < (knob != "warmup_steps")):
                raise ValueError(
                    f"{section}.{knob}={sec[knob]} must be a "
                    f"{'non-negative' if knob == 'warmup_steps' else 'positive'} "
                    "integer"
                )
        if float(sec.get("min_window_s") or 0.0) < 0:
            raise ValueError(f"{section}.min_window_s={sec.min_window_s} must be >= 0")
    if "template" in sections and int(s.template.warmup_steps) < 1:
        raise ValueError("template.warmup_steps must be >= 1 (the Trainer's first step sets up)")
    return s


# ---------------------------------------------------------------------------- the device
@dataclass
class Bench:
    """Device, precision and network preparation shared by every variant."""

    device: torch.device
    precision: str
    channels_last: bool
    compile: bool
    cudnn_benchmark: bool
    out_dir: Path

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def autocast(self) -> AbstractContextManager[Any]:
        if self.precision == "bf16-mixed":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if self.precision == "16-mixed":
            return torch.autocast(self.device.type, dtype=torch.float16)
        return nullcontext()

    def place(self, net: nn.Module) -> nn.Module:
        net = net.to(self.device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net

    def compiled(self, net: nn.Module) -> nn.Module:
        return torch.compile(net) if self.compile else net  # type: ignore[return-value]

    def images(self, batch: int, size: int, channels: int = 3) -> Tensor:
        x = torch.randn(batch, channels, size, size, device=self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def trainer(self, **kwargs: Any) -> Any:
        """A Lightning Trainer with everything that is not training switched off."""
        import lightning as L

        if self.cuda:
            accelerator, devices = "gpu", [self.device.index or 0]
        else:
            accelerator, devices = "cpu", 1
        return L.Trainer(
            accelerator=accelerator,
            devices=devices,
            precision=self.precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            deterministic=False,
            benchmark=self.cudnn_benchmark if self.cuda else None,
            log_every_n_steps=50,
            default_root_dir=str(self.out_dir),
            **kwargs,
        )


def _logits(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)  # our ClassifierOutput, torchvision's namedtuples
    if isinstance(logits, Tensor):
        return logits
    return out[0]


def _param_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _state_bytes(net: nn.Module) -> int:
    return sum(
        t.numel() * t.element_size() for t in itertools.chain(net.parameters(), net.buffers())
    )


def _timed_window(
    step: Callable[[], None], warmup: int, window: int, sync: Callable[[], None]
) -> float:
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(window):
        step()
    sync()
    return time.perf_counter() - t0


def _calibrated_steps(
    step: Callable[[], None], sync: Callable[[], None], warmup: int, window: int, seconds: float
) -> int:
    """Steps per window: at least ``window``, and enough to last ``seconds`` at the speed of one
    step timed after ``warmup`` untimed ones (short windows are at the mercy of the scheduler)."""
    if seconds <= 0:
        return window
    one = _timed_window(step, warmup, 1, sync)
    return max(window, min(100_000, math.ceil(seconds / max(one, 1e-6))))


def _alternate(
    runners: dict[str, Callable[[], None]],
    *,
    rounds: int,
    warmup: dict[str, int],
    window: int,
    min_window_s: float,
    sync: Callable[[], None],
    label: str,
    batch: int,
    before: Callable[[str], None] | None = None,
    after: Callable[[str], None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Round by round, one timed window of each runner in turn (after its warm-up steps).

    Returns the window seconds and the steps per window of every runner."""
    steps = {
        k: _calibrated_steps(f, sync, warmup[k], window, min_window_s) for k, f in runners.items()
    }
    seconds: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(rounds):
        for k, step in runners.items():
            if before is not None:
                before(k)
            seconds[k].append(_timed_window(step, warmup[k], steps[k], sync))
            if after is not None:
                after(k)
        rates = ", ".join(f"{k} {batch * steps[k] / seconds[k][-1]:,.0f}" for k in runners)
        log.info("%s round %d/%d: %s images/s", label, r + 1, rounds, rates)
    return seconds, steps


class _TrainLoop:
    """The minimal PyTorch training step: zero_grad, forward, cross-entropy, backward, step."""

    def __init__(
        self,
        net: nn.Module,
        batches: Iterator[tuple[Tensor, Tensor]],
        bench: Bench,
        *,
        lr: float,
        momentum: float,
        weight_decay: float,
    ) -> None:
        self.net = bench.compiled(net)
        self.batches, self.autocast = batches, bench.autocast
        self.opt = torch.optim.SGD(
            net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
        self.scaler = (
            torch.amp.GradScaler(bench.device.type) if bench.precision == "16-mixed" else None
        )

    def step(self) -> None:
        x, y = next(self.batches)
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss = F.cross_entropy(_logits(self.net(x)), y)
        if self.scaler is None:
            loss.backward()
            self.opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's per-Trainer banners ("GPU available ...") off; warnings stay on."""
    levels = {
        "lightning.pytorch": logging.WARNING,
        "lightning.fabric": logging.WARNING,
        "lightning": logging.WARNING,
        "classicnets.data.datamodule": logging.ERROR,
    }
    saved = {n: logging.getLogger(n).level for n in levels}
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*val_dataloader.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def _free(bench: Bench) -> None:
    gc.collect()
    if bench.cuda:
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- 1. template
class _Cycle:
    """An iterable of ``length`` batches cycling through a list (what the Trainer iterates)."""

    def __init__(self, batches: Sequence[tuple[Tensor, Tensor]], length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(self.length):
            yield self.batches[i % len(self.batches)]


def _cycle_data(batches: Sequence[tuple[Tensor, Tensor]], length: int) -> Any:
    """A DataModule serving :class:`_Cycle` and moving batches as ImageDataModule does."""
    import lightning as L

    from classicnets.data import pair_to_device

    class CycleData(L.LightningDataModule):
        def train_dataloader(self) -> _Cycle:
            return _Cycle(batches, length)

        def transfer_batch_to_device(self, batch: Any, device: torch.device, idx: int) -> Any:
            return pair_to_device(batch, device)

    return CycleData()


def _lightning_windows(
    warmup: int, window: int, sync: Callable[[], None], between: Callable[[], None]
) -> Any:
    from lightning.pytorch.callbacks import Callback

    class LightningWindows(Callback):
        """Times windows of whole training steps inside one ``fit``: a window runs from the
        ``on_train_batch_end`` of one step to that of the step ``window`` later, after
        ``warmup`` untimed steps; at its end ``between`` runs the other variant's window."""

        def __init__(self) -> None:
            self.done, self.t0 = 0, 0.0
            self.seconds: list[float] = []

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            self.done += 1
            position = self.done % (warmup + window)
            if position == warmup:
                sync()
                self.t0 = time.perf_counter()
            elif position == 0:
                sync()
                self.seconds.append(time.perf_counter() - self.t0)
                between()

    return LightningWindows()


def _sgd(t: DictConfig) -> dict[str, Any]:
    return {
        "_target_": "torch.optim.SGD",
        "_partial_": True,
        "lr": float(t.lr),
        "momentum": float(t.momentum),
        "weight_decay": float(t.weight_decay),
    }


class _TinyNet(nn.Sequential):
    """Two small linear layers: a step so cheap that its time is almost all host overhead."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__(nn.Flatten(), nn.Linear(in_features, 64), nn.ReLU(),
                         nn.Linear(64, num_classes))


def _template_case(
    t: DictConfig,
    bench: Bench,
    *,
    net: nn.Module,
    case: str,
    model: str,
    batch_size: int,
    image_size: int,
) -> list[Row]:
    """Lightning vs the plain loop on ``net``: Lightning windows cut out of one ``fit``, the
    plain loop's window run between two of them (see the module docstring)."""
    from classicnets.module import ImageClassifier

    rounds, warmup, window = int(t.rounds), int(t.warmup_steps), int(t.window_steps)
    min_window_s = float(t.get("min_window_s") or 0.0)
    bs, size, classes = batch_size, image_size, int(t.num_classes)
    hand_net = bench.place(copy.deepcopy(net))
    params = _param_count(net)
    g = torch.Generator(device="cpu").manual_seed(0)
    batches = [
        (bench.images(bs, size), torch.randint(0, classes, (bs,), generator=g).to(bench.device))
        for _ in range(max(1, int(t.num_batches)))
    ]
    hand = _TrainLoop(
        hand_net,
        itertools.cycle(batches),
        bench,
        lr=float(t.lr),
        momentum=float(t.momentum),
        weight_decay=float(t.weight_decay),
    )
    hand_seconds: list[float] = []
    # the plain loop's speed (after its warm-up, compilation included) sets the window length
    window = _calibrated_steps(hand.step, bench.sync, warmup, window, min_window_s)

    def hand_window() -> None:
        hand_seconds.append(_timed_window(hand.step, warmup, window, bench.sync))
        log.info(
            "template (%s) round %d/%d: lightning %.0f, plain loop %.0f images/s",
            case,
            len(hand_seconds),
            rounds,
            bs * window / windows.seconds[-1],
            bs * window / hand_seconds[-1],
        )

    module = ImageClassifier(
        model=net,
        optimizer=_sgd(t),
        scheduler=None,
        compile=bench.compile,
        channels_last=bench.channels_last,
        num_classes=classes,
    )
    windows = _lightning_windows(warmup, window, bench.sync, hand_window)
    total = rounds * (warmup + window)
    with _quiet_lightning():
        trainer = bench.trainer(max_steps=total, max_epochs=1, callbacks=[windows])
        trainer.fit(module, datamodule=_cycle_data(batches, total))
    if len(windows.seconds) != rounds or len(hand_seconds) != rounds:
        raise RuntimeError(
            f"template: expected {rounds} windows per variant, got "
            f"{len(windows.seconds)} (Lightning) and {len(hand_seconds)} (plain)"
        )
    common = {
        "section": "template",
        "case": case,
        "model": model,
        "batch_size": bs,
        "image_size": size,
        "precision": bench.precision,
        "params": params,
    }
    return [
        Row(
            variant="lightning",
            ratio=_paired_ratio(windows.seconds, hand_seconds),
            note="ImageClassifier under the Trainer: hooks, metric sums, epoch logging",
            **common,
            **_summarise(windows.seconds, window, bs),
        ),
        Row(
            variant="plain",
            ratio=1.0,
            note="zero_grad, forward, cross-entropy, backward, step",
            **common,
            **_summarise(hand_seconds, window, bs),
        ),
    ]


def bench_template(s: DictConfig, bench: Bench) -> list[Row]:
    """The template's cost on the section's network, then (``template.overhead``) on a tiny
    network whose step is nearly all host time: the per-step time the template adds there is
    what a GPU step that is bound by kernel launches pays in full."""
    from classicnets.models import create_model

    t = s.template
    size, classes = int(t.image_size), int(t.num_classes)
    net = create_model(t.model, num_classes=classes, in_channels=3, input_size=size)
    rows = _template_case(t, bench, net=net, case="training", model=str(t.model),
                          batch_size=int(t.batch_size), image_size=size)
    if t.get("overhead", False):
        _free(bench)
        torch.manual_seed(0)
        tiny_size, tiny_bs = 8, int(t.get("overhead_batch_size") or 16)
        rows += _template_case(
            t, bench, net=_TinyNet(3 * tiny_size * tiny_size, classes), case="host overhead",
            model="tiny mlp", batch_size=tiny_bs, image_size=tiny_size)
    return rows


# ---------------------------------------------------------------------------- 2. data
def _datamodule(
    bench: Bench,
    root: str,
    seed: int,
    *,
    name: str,
    loader: str,
    num_samples: int,
    batch_size: int,
    image_size: int,
    num_workers: int | None,
) -> Any:
    from classicnets.data import ImageDataModule, get_spec

    spec = get_spec(name)
    return ImageDataModule(
        name=name,
        root=root,
        batch_size=batch_size,
        num_workers=num_workers,
        val_fraction=0.0,
        image_size=image_size,
        num_classes=10 if spec.num_classes is None else None,
        loader=loader,
        num_samples=num_samples,
        seed=seed,
        channels_last=bench.channels_last,
    )


def _device_batches(loader: Any, bench: Bench) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches on the device in the network's memory format, epoch after epoch."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for x, y in loader:
            if x.device != bench.device:
                x = x.to(bench.device, non_blocking=True)
                y = y.to(bench.device, non_blocking=True)
            if bench.channels_last and not x.is_contiguous(memory_format=torch.channels_last):
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
        epoch += 1


def _prefetched(loader: Any) -> int:
    """Batches a DataLoader's workers hold ready while another variant runs."""
    workers = int(getattr(loader, "num_workers", 0) or 0)
    return workers * int(getattr(loader, "prefetch_factor", 0) or 0) if workers else 0


def bench_data(s: DictConfig, bench: Bench, root: str, seed: int) -> list[Row]:
    from classicnets.models import create_model

    d, t = s.data, s.template
    rounds, warmup, window = int(d.rounds), int(d.warmup_steps), int(d.window_steps)
    min_window_s = float(d.get("min_window_s") or 0.0)
    bs, size = int(d.batch_size), int(d.image_size)
    paths = ("fast", "torch")
    loaders: dict[str, Any] = {}
    with _quiet_lightning():
        device_trainer = bench.trainer()  # the DataModule asks its trainer for the device
        for path in paths:
            dm = _datamodule(
                bench,
                root,
                seed,
                name=str(d.name),
                loader=path,
                num_samples=int(d.num_samples),
                batch_size=bs,
                image_size=size,
                num_workers=d.get("num_workers"),
            )
            dm.trainer = device_trainer
            dm.setup("fit")
            loaders[path] = dm.train_dataloader()
    workers = int(getattr(loaders["torch"], "num_workers", 0))
    # the ordinary loader's workers fill their prefetch queue during the other path's window:
    # its warm-up drains that queue so its timed window sees only steady-state throughput
    warm = {
        p: max(warmup, _prefetched(loaders[p]) + 1 if _prefetched(loaders[p]) else 0) for p in paths
    }
    streams = {p: _device_batches(loaders[p], bench) for p in paths}

    def fetch(it: Iterator[Any]) -> Callable[[], None]:
        return lambda: next(it)  # type: ignore[return-value]

    timing = {
        "rounds": rounds,
        "warmup": warm,
        "window": window,
        "min_window_s": min_window_s,
        "sync": bench.sync,
        "batch": bs,
    }
    seconds, steps = _alternate({p: fetch(streams[p]) for p in paths}, label="data", **timing)
    common = {"section": "data", "batch_size": bs, "image_size": size, "precision": ""}
    note = {
        "fast": "on-device batches, batched crop+flip",
        "torch": f"DataLoader, {workers} worker(s), per-image transforms"
        + (", to device" if bench.cuda else ""),
    }
    ratio = _paired_ratio(seconds["fast"], seconds["torch"], steps["fast"], steps["torch"])
    rows = [
        Row(
            case="data only",
            variant=p,
            ratio=ratio if p == "fast" else 1.0,
            note=note[p],
            **common,
            **_summarise(seconds[p], steps[p], bs),
        )
        for p in paths
    ]

    if d.get("train", True):
        net = create_model(t.model, num_classes=10, in_channels=3, input_size=size)
        params = _param_count(net)
        loops = {
            p: _TrainLoop(
                bench.place(copy.deepcopy(net)),
                streams[p],
                bench,
                lr=float(t.lr),
                momentum=float(t.momentum),
                weight_decay=float(t.weight_decay),
            )
            for p in paths
        }
        train_s, train_n = _alternate(
            {p: loops[p].step for p in paths}, label="data/training", **timing
        )
        ratio = _paired_ratio(train_s["fast"], train_s["torch"], train_n["fast"], train_n["torch"])
        rows += [
            Row(
                case="training (plain loop)",
                variant=p,
                model=str(t.model),
                ratio=ratio if p == "fast" else 1.0,
                params=params,
                note=note[p],
                **{**common, "precision": bench.precision},
                **_summarise(train_s[p], train_n[p], bs),
            )
            for p in paths
        ]
    return rows


# ---------------------------------------------------------------------------- 3. twins
def _reference(name: str, size: int, timm_name: str | None) -> nn.Module:
    if timm_name:
        import timm

        return timm.create_model(timm_name, pretrained=False, num_classes=1000)
    import torchvision

    kwargs: dict[str, Any] = {"weights": None, "num_classes": 1000}
    if name in ("inception_v3", "googlenet"):
        kwargs.update(aux_logits=False, init_weights=False)
    if name.startswith("vit_"):
        kwargs["image_size"] = size
    return getattr(torchvision.models, name)(**kwargs)


class _ForwardBackward:
    def __init__(self, net: nn.Module, x: Tensor, y: Tensor, bench: Bench) -> None:
        self.module, self.net = net, bench.compiled(net)
        self.x, self.y, self.autocast = x, y, bench.autocast

    def step(self) -> None:
        self.module.zero_grad(set_to_none=True)
        with self.autocast():
            loss = F.cross_entropy(_logits(self.net(self.x)).float(), self.y)
        loss.backward()


def _twin_rows(
    name: str, timm_name: str | None, size: int, bs: int, bench: Bench, w: DictConfig
) -> list[Row]:
    """Build our ``name`` and its reference, time forward+backward alternately, and measure
    each one's peak memory on GPU."""
    from classicnets.models import create_model

    extra = {"aux_logits": False} if name == "inception_v3" else {}
    nets = {
        "ours": create_model(name, num_classes=1000, input_size=size, **extra),
        "reference": _reference(name, size, timm_name),
    }
    params = {k: _param_count(v) for k, v in nets.items()}
    state = {k: _state_bytes(v) for k, v in nets.items()}
    x = bench.images(bs, size)
    y = torch.randint(0, 1000, (bs,), device=bench.device)
    runners = {k: _ForwardBackward(bench.place(v).train(), x, y, bench) for k, v in nets.items()}
    peak: dict[str, float] = dict.fromkeys(runners, 0.0 if bench.cuda else math.nan)
    base = {"bytes": 0}

    def before(k: str) -> None:
        if bench.cuda:
            bench.sync()
            torch.cuda.reset_peak_memory_stats(bench.device)
            base["bytes"] = torch.cuda.memory_allocated(bench.device)

    def after(k: str) -> None:
        runners[k].module.zero_grad(set_to_none=True)  # the other twin's window starts bare
        if bench.cuda:
            # this network alone: its weights and buffers plus what its steps added
            used = torch.cuda.max_memory_allocated(bench.device) - base["bytes"] + state[k]
            peak[k] = max(peak[k], used / 2**20)

    seconds, steps = _alternate(
        {k: r.step for k, r in runners.items()},
        rounds=int(w.rounds),
        warmup=dict.fromkeys(runners, int(w.warmup_steps)),
        window=int(w.window_steps),
        min_window_s=float(w.get("min_window_s") or 0.0),
        sync=bench.sync,
        label=f"twins {name}",
        batch=bs,
        before=before,
        after=after,
    )
    speed = _paired_ratio(seconds["ours"], seconds["reference"], steps["ours"], steps["reference"])
    ref_label = f"timm {timm_name}" if timm_name else f"torchvision {name}"
    note = (
        ""
        if params["ours"] == params["reference"]
        else f"parameter counts differ ({params['ours']:,} vs {params['reference']:,})"
    )
    rows = [
        Row(
            section="twins",
            case=name,
            variant=k,
            model=name if k == "ours" else ref_label,
            batch_size=bs,
            image_size=size,
            precision=bench.precision,
            ratio=speed if k == "ours" else 1.0,
            peak_mem_mib=peak[k],
            params=params[k],
            note=note,
            **_summarise(seconds[k], steps[k], bs),
        )
        for k in runners
    ]
    log.info(
        "twins %s (%d px, batch %d): ours %.1f ms, %s %.1f ms, speed ratio %.3f",
        name,
        size,
        bs,
        rows[0].ms_per_step,
        ref_label,
        rows[1].ms_per_step,
        speed,
    )
    return rows


def bench_twins(s: DictConfig, bench: Bench) -> list[Row]:
    from classicnets.models import get_model_info

    w = s.twins
    sizes, batches = dict(w.get("sizes") or {}), dict(w.get("batch_sizes") or {})
    pairs: list[tuple[str, str | None]] = [(m, None) for m in w.models or []]
    timm_map = dict(w.get("timm") or {})
    if timm_map:
        try:
            import timm  # noqa: F401
        except ImportError:
            log.warning(
                "twins: timm is not installed (pip install -e '.[bench]'): skipping %s",
                ", ".join(timm_map),
            )
            timm_map = {}
    pairs += [(ours, str(ref)) for ours, ref in timm_map.items()]
    rows: list[Row] = []
    for name, timm_name in pairs:
        size = int(sizes.get(name) or w.get("image_size") or get_model_info(name).input_size)
        bs = int(batches.get(name) or w.batch_size)
        rows += _twin_rows(name, timm_name, size, bs, bench, w)
        _free(bench)
    return rows


# ---------------------------------------------------------------------------- 4. epoch
def _epoch_timer(sync: Callable[[], None]) -> Any:
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self) -> None:
            self.t0, self.images = 0.0, 0
            self.epochs: list[tuple[float, int]] = []  # (seconds, images) per epoch

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            sync()
            self.t0, self.images = time.perf_counter(), 0

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            self.images += int(batch[1].shape[0])

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            sync()
            self.epochs.append((time.perf_counter() - self.t0, self.images))

    return EpochTimer()


def bench_epoch(s: DictConfig, bench: Bench, root: str, seed: int) -> list[Row]:
    from classicnets.models import create_model
    from classicnets.module import ImageClassifier

    e, t = s.epoch, s.template
    bs, size, n = int(e.batch_size), 32, int(e.num_samples)
    warm = int(e.warmup_epochs or 0)
    start = time.perf_counter()
    with _quiet_lightning():
        dm = _datamodule(
            bench,
            root,
            seed,
            name="synthetic",
            loader="fast",
            num_samples=n,
            batch_size=bs,
            image_size=size,
            num_workers=None,
        )
        net = create_model(e.model, num_classes=10, in_channels=3, input_size=size)
        module = ImageClassifier(
            model=net,
            optimizer=_sgd(t),
            scheduler=None,
            compile=bench.compile,
            channels_last=bench.channels_last,
            num_classes=10,
        )
        timer = _epoch_timer(bench.sync)
        trainer = bench.trainer(max_epochs=warm + 1, callbacks=[timer])
        trainer.fit(module, datamodule=dm)
    bench.sync()
    total = time.perf_counter() - start
    common = {
        "section": "epoch",
        "model": str(e.model),
        "batch_size": bs,
        "image_size": size,
        "precision": bench.precision,
        "params": _param_count(net),
        "windows": 1,
    }
    seconds, images = timer.epochs[-1]
    rows = [
        Row(
            case=f"synthetic {n} images",
            variant="epoch",
            seconds=seconds,
            images_per_s=images / seconds,
            ms_per_step=1e3 * seconds / max(1, images // bs),
            note=f"steady epoch ({images} images, Trainer, fast loader, no validation)",
            **common,
        )
    ]
    if warm:
        first_s, first_n = timer.epochs[0]
        rows.append(
            Row(
                case=f"synthetic {n} images",
                variant="first epoch",
                seconds=first_s,
                images_per_s=first_n / first_s,
                ms_per_step=1e3 * first_s / max(1, first_n // bs),
                note="cold: first steps"
                + (", cudnn autotuning" if bench.cuda else "")
                + (", torch.compile" if bench.compile else ""),
                **common,
            )
        )
    done = sum(k for _, k in timer.epochs)
    rows.append(
        Row(
            case=f"synthetic {n} images",
            variant="fit total",
            seconds=total,
            images_per_s=done / total,
            note=(f"{len(timer.epochs)} epoch(s) incl. data generation and setup"),
            **common,
        )
    )
    return rows


# ---------------------------------------------------------------------------- report
def bench_towers(s: DictConfig, bench: Bench) -> list[Row]:
    """AlexNet's towers vs DDP, two processes each holding both layouts (alternated windows)."""
    from classicnets.parallel.bench import measure_towers

    t = s.towers
    settings = {"device": bench.device.type, "precision": bench.precision,
                "image_size": t.image_size, "batch_size": t.batch_size,
                "num_classes": t.num_classes, "lr": t.lr, "rounds": t.rounds,
                "warmup_steps": t.warmup_steps, "window_steps": t.window_steps,
                "threads": t.threads}
    log.info("towers: AlexNet at %d px, global batch %d, 2 processes", t.image_size,
             t.batch_size)
    per_process = measure_towers(settings)
    first = per_process[0]  # the processes hold the same amounts (the towers' halves differ
    # only in FC8 with an odd class count); time: the slower process of each window
    seconds = {k: [max(p[k]["seconds"][i] for p in per_process)
                   for i in range(len(first[k]["seconds"]))] for k in first}
    rows = []
    for variant in ("towers", "ddp"):
        r = first[variant]
        steps = int(r["steps"])
        rows.append(Row(
            section="towers", case="alexnet, 2 processes", variant=variant, model="alexnet",
            batch_size=int(t.batch_size), image_size=int(t.image_size),
            precision=bench.precision, params=int(r["params"]),
            param_mib=r["param_bytes"] / 2**20, optimizer_mib=r["optimizer_bytes"] / 2**20,
            ratio=_paired_ratio(seconds[variant], seconds["ddp"]),
            note=f"grads {r['grad_bytes'] / 2**20:,.0f} MiB per process",
            **_summarise(seconds[variant], steps, int(t.batch_size)),
        ))
    return rows


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(bench: Bench) -> dict[str, str]:
    import lightning
    import torchvision

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "cpu": f"{_cpu_model()} ({cores} cores, {torch.get_num_threads()} torch threads)",
        "gpu": torch.cuda.get_device_name(bench.device) if bench.cuda else "none",
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, lightning {lightning.__version__}",
    }
    if hasattr(os, "getloadavg"):
        info["load"] = f"{os.getloadavg()[0]:.2f}"
    if bench.cuda:
        info["software"] += f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    try:
        import timm

        info["software"] += f", timm {timm.__version__}"
    except ImportError:
        pass
    return info


def _f(value: float, fmt: str) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (format(value, fmt))
    )


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return out


def _verdict(value: float, target: float) -> str:
    return "met" if value >= target else "**not met**"


def render_markdown(rows: Sequence[Row], s: DictConfig, bench: Bench, info: dict[str, str]) -> str:
    md = [
        "# classicnets benchmark",
        "",
        f"- machine: {info['cpu']}; GPU: {info['gpu']}"
        + (
            f"; load average {info['load']} at start, {os.getloadavg()[0]:.2f} at this table "
            "(other processes skew CPU figures)"
            if "load" in info
            else ""
        ),
        f"- {info['software']}",
        f"- device {bench.device}, precision {bench.precision}, channels_last "
        f"{bench.channels_last}, compile {bench.compile}"
        + (
            f", matmul precision {s.get('matmul_precision')}, cudnn.benchmark "
            f"{bench.cudnn_benchmark}"
            if bench.cuda
            else ""
        ),
        "- each figure: median over timed windows (each after untimed warm-up steps, and at "
        "least min_window_s long); variants alternate window by window; ratios are medians of "
        "per-round ratios; spread = (max - min) / median of the windows' images/s",
        "",
    ]
    by = {sec: [r for r in rows if r.section == sec] for sec in SECTIONS}
    if by["template"]:
        t, lrow, prow = s.template, by["template"][0], by["template"][1]
        tiny = [r for r in by["template"] if r.case == "host overhead"]
        md += [
            "## 1. Template: ImageClassifier under the Lightning Trainer vs a plain loop",
            "",
            f"{lrow.model}, batch {lrow.batch_size}, {lrow.image_size} px, "
            f"{lrow.precision}, SGD momentum {t.momentum}, the same {t.num_batches} "
            f"pre-made batches on the device; {lrow.windows} window(s) per variant of "
            f"{lrow.steps} steps, each after {t.warmup_steps} untimed step(s)",
            "",
        ]
        md += _table(
            ["variant", "images/s", "ms/step", "spread", "what runs"],
            [
                [
                    r.variant,
                    _f(r.images_per_s, ",.0f"),
                    _f(r.ms_per_step, ".2f"),
                    _f(r.spread_pct, ".1f") + " %",
                    r.note,
                ]
                for r in (lrow, prow)
            ],
        )
        md += [
            "",
            f"**template / plain = {lrow.ratio:.3f}** (target ≥ 0.97: "
            f"{_verdict(lrow.ratio, 0.97)}; ratio of the medians "
            f"{lrow.images_per_s / prow.images_per_s:.3f})",
        ]
        if bench.cuda and lrow.model == "resnet18" and lrow.image_size == 32:
            md += [
                "",
                f"CIFAR ResNet-18 training: {lrow.images_per_s:,.0f} images/s under the "
                "Trainer (H100 target ≥ 50,000: "
                f"{_verdict(lrow.images_per_s, 50_000)})",
            ]
        if len(tiny) == 2:
            tl, tp = tiny
            added_us = 1e3 * (tl.ms_per_step - tp.ms_per_step)
            md += [
                "",
                f"Host overhead: a {tl.model} ({tl.params:,} parameters, batch {tl.batch_size}, "
                f"{tl.image_size} px), whose step is almost all Python and kernel launches: "
                f"plain loop {1e3 * tp.ms_per_step:,.0f} µs/step, under the Trainer "
                f"{1e3 * tl.ms_per_step:,.0f} µs/step (ratio {tl.ratio:.3f}): the template adds "
                f"**{added_us:,.0f} µs of host time per step** — what a step bound by launches "
                "pays; a step whose device work outlasts it hides it behind the queue.",
            ]
        md.append("")
    if by["data"]:
        d = s.data
        md += [
            "## 2. Data paths: fast (on-device) vs torch (DataLoader)",
            "",
            f"data={d.name}, {d.num_samples} samples, {d.image_size} px, crop+flip "
            f"augmentation, batch {d.batch_size}; data only = iterate the training loader "
            "(batches on the device); training = plain PyTorch loop on "
            f"{s.template.model} fed by each loader",
            "",
        ]
        md += _table(
            ["case", "path", "images/s", "ms/batch", "windows", "spread", "fast / torch", "note"],
            [
                [
                    r.case,
                    r.variant,
                    _f(r.images_per_s, ",.0f"),
                    _f(r.ms_per_step, ".2f"),
                    f"{r.windows} × {r.steps}",
                    _f(r.spread_pct, ".1f") + " %",
                    _f(r.ratio, ".2f") if r.variant == "fast" else "",
                    r.note,
                ]
                for r in by["data"]
            ],
        )
        fast = next(r for r in by["data"] if r.case == "data only" and r.variant == "fast")
        md += [
            "",
            f"**data only: fast / torch = {fast.ratio:.1f}×** (target ≥ 10×: "
            f"{_verdict(fast.ratio, 10.0)})",
            "",
        ]
    if by["twins"]:
        md += [
            "## 3. Twins: ours vs the reference implementation (forward + backward)",
            "",
            "same input (random, batch × size below), train mode, cross-entropy, "
            f"{bench.precision}; time ratio = ours / reference; speed ratio = reference / "
            "ours (≥ 0.95: ours is no slower)"
            + ("; peak = the network's weights + the step's extra memory" if bench.cuda else ""),
            "",
        ]
        head = [
            "model",
            "reference",
            "input",
            "ours ms",
            "ref ms",
            "time ratio",
            "speed ratio",
            "params",
        ]
        if bench.cuda:
            head += ["ours MiB", "ref MiB"]
        lines = []
        twins = by["twins"]
        for ours, ref in zip(twins[0::2], twins[1::2]):
            line = [
                ours.case,
                ref.model,
                f"{ours.batch_size}×{ours.image_size}²",
                _f(ours.ms_per_step, ".1f"),
                _f(ref.ms_per_step, ".1f"),
                _f(1.0 / ours.ratio, ".3f"),
                _f(ours.ratio, ".3f") + ("" if ours.ratio >= 0.95 else " ⚠"),
                f"{ours.params / 1e6:.2f} M"
                + ("" if ours.params == ref.params else f" vs {ref.params / 1e6:.2f} M"),
            ]
            if bench.cuda:
                line += [_f(ours.peak_mem_mib, ",.0f"), _f(ref.peak_mem_mib, ",.0f")]
            lines.append(line)
        md += _table(head, lines)
        slow = [r.case for r in twins[0::2] if r.ratio < 0.95]
        md += [
            "",
            f"{len(twins) // 2 - len(slow)} of {len(twins) // 2} at speed ratio ≥ 0.95"
            + (f"; below: {', '.join(slow)}" if slow else ""),
            "",
        ]
    if by["epoch"]:
        e = by["epoch"]
        md += [
            "## 4. One epoch through the Trainer (fast loader)",
            "",
            f"{e[0].model}, batch {e[0].batch_size}, {e[0].image_size} px, "
            f"{e[0].precision}, data=synthetic num_samples={s.epoch.num_samples} "
            "val_fraction=0, validation off",
            "",
        ]
        md += _table(
            ["", "wall s", "images/s", "ms/step", "note"],
            [
                [
                    r.variant,
                    _f(r.seconds, ".2f"),
                    _f(r.images_per_s, ",.0f"),
                    _f(r.ms_per_step, ".2f"),
                    r.note,
                ]
                for r in e
            ],
        )
        md.append("")
    if by["towers"]:
        tw = by["towers"]
        md += [
            "## 5. AlexNet's towers vs DDP (2 processes)",
            "",
            f"{tw[0].model} at {tw[0].image_size} px, global batch {tw[0].batch_size}, "
            f"{tw[0].precision}, SGD with momentum; towers: half of every layer per process, "
            "the whole batch through both; ddp: the whole network per process, half the batch",
            "",
        ]
        md += _table(
            ["", "params / process", "param MiB", "optimizer MiB", "ms/step", "images/s",
             "speed vs ddp"],
            [[r.variant, f"{r.params:,}", _f(r.param_mib, ",.0f"), _f(r.optimizer_mib, ",.0f"),
              _f(r.ms_per_step, ".1f"), _f(r.images_per_s, ",.1f"), _f(r.ratio, ".3f")]
             for r in tw],
        )
        md.append("")
    return "\n".join(md)


def write_csv(rows: Sequence[Row], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            out = {}
            for key in CSV_COLUMNS:
                value = getattr(row, key)
                if isinstance(value, float):
                    value = "" if math.isnan(value) else f"{value:.6g}"
                out[key] = value
            writer.writerow(out)


# ---------------------------------------------------------------------------- entry
def _output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # called outside Hydra
        return Path.cwd()


def run_benchmark(cfg: DictConfig) -> list[Row]:
    """Run the configured sections; write ``benchmark.md`` and ``benchmark.csv`` to the run
    directory (after every section, so an interrupted run keeps what it measured)."""
    s = resolve_settings(cfg)
    if (cfg.get("extras") or {}).get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    out_dir = _output_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(s, out_dir / "benchmark_settings.yaml")
    bench = Bench(
        device=torch.device(s.device),
        precision=str(s.precision),
        channels_last=bool(s.channels_last),
        compile=bool(s.compile),
        cudnn_benchmark=bool(s.get("cudnn_benchmark", True)),
        out_dir=out_dir,
    )
    if bench.cuda:
        if bench.device.index is not None:  # plain "cuda" means the current device
            torch.cuda.set_device(bench.device)
        if s.get("matmul_precision"):
            torch.set_float32_matmul_precision(str(s.matmul_precision))
        torch.backends.cudnn.benchmark = bench.cudnn_benchmark
    if s.get("threads"):
        torch.set_num_threads(int(s.threads))
    torch.manual_seed(int(cfg.get("seed", 0)))
    root = str(cfg.paths.data_dir) if "paths" in cfg else "data"
    seed = int(cfg.get("seed", 0))
    info = machine_info(bench)
    log.info("benchmark on %s / %s: sections %s", info["cpu"], info["gpu"], list(s.sections))
    runners: dict[str, Callable[[], list[Row]]] = {
        "template": lambda: bench_template(s, bench),
        "data": lambda: bench_data(s, bench, root, seed),
        "twins": lambda: bench_twins(s, bench),
        "epoch": lambda: bench_epoch(s, bench, root, seed),
        "towers": lambda: bench_towers(s, bench),
    }
    rows: list[Row] = []
    md = ""
    for section in s.sections:
        start = time.perf_counter()
        rows += runners[section]()
        _free(bench)
        log.info("section %s done in %.1f s", section, time.perf_counter() - start)
        md = render_markdown(rows, s, bench, info)
        (out_dir / "benchmark.md").write_text(md + "\n")
        write_csv(rows, out_dir / "benchmark.csv")
    print(md)
    log.info("wrote %s and %s", out_dir / "benchmark.md", out_dir / "benchmark.csv")
    return rows
