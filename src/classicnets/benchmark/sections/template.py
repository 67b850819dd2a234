"""Section ``template``: :class:`ImageClassifier` under the Lightning Trainer vs a plain loop.

Training images/s of the template against a minimal PyTorch loop (zero_grad, forward,
cross-entropy, backward, step) on the same network, the same pre-made batches already on the
device, batch size, precision and optimizer. The Lightning windows are cut out of one ``fit``
by a callback at ``on_train_batch_end`` (each window spans whole steps: batch fetch, hooks,
metric updates, logging, optimizer step); the plain loop's window runs between two of them, so
the two alternate window by window and every round gives one paired ratio.

Then (``template.overhead``) the same on a tiny network whose step is nearly all host time:
the microseconds per step the template adds there — from the main thread's CPU time, which a
busy machine's waiting for a core does not inflate — are what a GPU step bound by kernel
launches pays in full.

With ``compile=true`` two more cases run the section's network against the *eager* plain loop:
the template with ``module.compile=step`` (the whole step compiled; CUDA graphs on CUDA) and
with ``module.compile=network``, so the two ratios share one baseline and their quotient is
compiled step vs compiled network.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from classicnets.benchmark.device import Bench
from classicnets.benchmark.measure import Window, calibrated_steps, summarise, timed_window
from classicnets.benchmark.sections.common import (
    Context,
    TrainLoop,
    param_count,
    quiet_lightning,
    sgd,
)
from classicnets.benchmark.tables import (
    Row,
    SectionReport,
    fmt,
    fmt_estimate,
    paired_fields,
    table,
    verdict,
)

__all__ = ["TARGET_RATIO", "measure"]

log = logging.getLogger(__name__)

TITLE = "Template: ImageClassifier under the Lightning Trainer vs a plain loop"
# template / plain loop throughput the project aims for, per device type (docs/performance/):
# a CPU step is long enough that the template should cost nothing (issue 13)
TARGET_RATIO = {"cpu": 0.99, "cuda": 0.97}


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
        ``warmup`` untimed steps; at its end ``between`` runs the other variant's window.
        ``fit`` runs in the calling thread, so ``thread_time`` counts the template's work."""

        def __init__(self) -> None:
            self.done, self.t0, self.c0 = 0, 0.0, 0.0
            self.windows: list[Window] = []

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            self.done += 1
            position = self.done % (warmup + window)
            if position == warmup:
                sync()
                self.c0, self.t0 = time.thread_time(), time.perf_counter()
            elif position == 0:
                sync()
                self.windows.append(
                    Window(
                        wall_s=time.perf_counter() - self.t0,
                        steps=window,
                        cpu_s=time.thread_time() - self.c0,
                    )
                )
                between()

    return LightningWindows()


class _TinyNet(nn.Sequential):
    """Two small linear layers: a step so cheap that its time is almost all host overhead."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__(nn.Flatten(), nn.Linear(in_features, 64), nn.ReLU(),
                         nn.Linear(64, num_classes))


def _case(
    t: DictConfig,
    bench: Bench,
    *,
    net: nn.Module,
    case: str,
    model: str,
    batch_size: int,
    image_size: int,
    module_compile: bool | str | None = None,
) -> list[Row]:
    """Lightning vs the plain loop on ``net``: Lightning windows cut out of one ``fit``, the
    plain loop's window run between two of them (see the module docstring).

    ``module_compile`` (``"step"``/``"network"``): the template compiled so, against the eager
    plain loop (``None``: both as ``bench.compile`` says)."""
    from classicnets.training.module import ImageClassifier

    rounds, warmup, window = int(t.rounds), int(t.warmup_steps), int(t.window_steps)
    min_window_s = float(t.get("min_window_s") or 0.0)
    bs, size, classes = batch_size, image_size, int(t.num_classes)
    hand_net = bench.place(copy.deepcopy(net))
    params = param_count(net)
    g = torch.Generator(device="cpu").manual_seed(0)
    batches = [
        (bench.images(bs, size), torch.randint(0, classes, (bs,), generator=g).to(bench.device))
        for _ in range(max(1, int(t.num_batches)))
    ]
    hand = TrainLoop(
        hand_net,
        itertools.cycle(batches),
        bench if module_compile is None else dataclasses.replace(bench, compile=False),
        lr=float(t.lr),
        momentum=float(t.momentum),
        weight_decay=float(t.weight_decay),
    )
    hand_windows: list[Window] = []
    # the plain loop's speed (after its warm-up, compilation included) sets the window length
    window = calibrated_steps(hand.step, bench.sync, warmup, window, min_window_s)

    def hand_window() -> None:
        hand_windows.append(timed_window(hand.step, warmup, window, bench.sync))
        light, plain = windows.windows[-1], hand_windows[-1]
        log.info(
            "template (%s) round %d/%d: lightning %.0f, plain loop %.0f images/s "
            "(CPU %.3g vs %.3g ms/step)",
            case,
            len(hand_windows),
            rounds,
            bs / light.per_step(),
            bs / plain.per_step(),
            1e3 * light.per_step("cpu"),
            1e3 * plain.per_step("cpu"),
        )

    module = ImageClassifier(
        model=net,
        optimizer=sgd(t),
        scheduler=None,
        compile=bench.compile if module_compile is None else module_compile,
        channels_last=bench.channels_last,
        num_classes=classes,
    )
    windows = _lightning_windows(warmup, window, bench.sync, hand_window)
    total = rounds * (warmup + window)
    with quiet_lightning():
        trainer = bench.trainer(max_steps=total, max_epochs=1, callbacks=[windows])
        trainer.fit(module, datamodule=_cycle_data(batches, total))
    if len(windows.windows) != rounds or len(hand_windows) != rounds:
        raise RuntimeError(
            f"template: expected {rounds} windows per variant, got "
            f"{len(windows.windows)} (Lightning) and {len(hand_windows)} (plain)"
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
    note = "ImageClassifier under the Trainer: hooks, metric sums, epoch logging"
    if module_compile is not None:
        note = f"ImageClassifier, module.compile={module_compile}, vs the eager plain loop"
    return [
        Row(
            variant="lightning",
            note=note,
            **common,
            **summarise(windows.windows, bs),
            **paired_fields(windows.windows, hand_windows, deltas=True),
        ),
        Row(
            variant="plain",
            note="zero_grad, forward, cross-entropy, backward, step",
            **common,
            **summarise(hand_windows, bs),
            **paired_fields(hand_windows, hand_windows, deltas=True),
        ),
    ]


def _render(rows: list[Row], t: DictConfig, bench: Bench) -> list[str]:
    lrow, prow = rows[0], rows[1]
    wall, cpu = lrow.estimate("ratio"), lrow.estimate("cpu_ratio")
    target = TARGET_RATIO.get(bench.device.type, TARGET_RATIO["cuda"])
    body = [
        f"{lrow.model}, batch {lrow.batch_size}, {lrow.image_size} px, "
        f"{lrow.precision}, SGD momentum {t.momentum}, the same {t.num_batches} "
        f"pre-made batches on the device; {lrow.windows} window(s) per variant of "
        f"{lrow.steps} steps, each after {t.warmup_steps} untimed step(s)",
        "",
    ]
    body += table(
        ["variant", "images/s", "ms/step", "CPU ms/step", "spread", "what runs"],
        [
            [
                r.variant,
                fmt(r.images_per_s, ",.0f"),
                fmt(r.ms_per_step, ".2f"),
                fmt(r.cpu_ms_per_step, ".2f"),
                fmt(r.spread_pct, ".1f") + " %",
                r.note,
            ]
            for r in (lrow, prow)
        ],
    )
    body += [
        "",
        f"**template / plain = {wall.value:.3f}** [{wall.low:.3f}, {wall.high:.3f}] from wall "
        f"time, {fmt_estimate(cpu, '.3f')} from CPU time (median of {lrow.windows} paired "
        f"rounds, 95 % bootstrap interval; ratio of the medians "
        f"{lrow.images_per_s / prow.images_per_s:.3f}); target ≥ {target}: wall "
        f"{verdict(wall, target)}, CPU {verdict(cpu, target) if cpu.known else '–'}",
    ]
    if bench.cuda and lrow.model == "resnet18" and lrow.image_size == 32:
        body += [
            "",
            f"CIFAR ResNet-18 training: {lrow.images_per_s:,.0f} images/s under the "
            f"Trainer (H100 target ≥ 50,000: {verdict(lrow.images_per_s, 50_000)})",
        ]
    compiled = {r.case: r for r in rows if r.variant == "lightning"
                and r.case in ("compiled step", "compiled network")}
    if compiled:
        body += ["", "Compiled template vs the eager plain loop (same network and batches):", ""]
        body += table(
            ["module.compile", "images/s", "CPU ms/step", "template / eager plain"],
            [[r.case.split()[1], fmt(r.images_per_s, ",.0f"), fmt(r.cpu_ms_per_step, ".2f"),
              fmt_estimate(r.estimate("ratio"), ".3f")] for r in compiled.values()],
        )
        if len(compiled) == 2:
            step, network = compiled["compiled step"], compiled["compiled network"]
            body += ["", f"compiled step / compiled network = "
                         f"{step.images_per_s / network.images_per_s:.3f} (ratio of medians)"]
    tiny = [r for r in rows if r.case == "host overhead"]
    if len(tiny) == 2:
        tl, tp = tiny
        added, added_wall = tl.estimate("cpu_delta_us"), tl.estimate("delta_us")
        body += [
            "",
            f"Host overhead: a {tl.model} ({tl.params:,} parameters, batch {tl.batch_size}, "
            f"{tl.image_size} px), whose step is almost all Python and kernel launches: "
            f"plain loop {1e3 * tp.cpu_ms_per_step:,.0f} µs/step of CPU time "
            f"({1e3 * tp.ms_per_step:,.0f} wall), under the Trainer "
            f"{1e3 * tl.cpu_ms_per_step:,.0f} µs/step ({1e3 * tl.ms_per_step:,.0f} wall; "
            f"throughput ratio {fmt_estimate(tl.estimate('cpu_ratio'), '.3f')} CPU, "
            f"{fmt_estimate(tl.estimate('ratio'), '.3f')} wall): the template adds "
            f"**{fmt(added.value, ',.0f')} µs of host time per step** "
            f"[{fmt(added.low, ',.0f')}, {fmt(added.high, ',.0f')}] from CPU time "
            f"({fmt_estimate(added_wall, ',.0f')} µs from wall time; medians of "
            f"{tl.windows} paired rounds of {tl.steps} steps, 95 % bootstrap intervals) — what "
            "a step bound by launches pays; a step whose device work outlasts it hides it "
            "behind the queue.",
        ]
    return body


def measure(ctx: Context) -> SectionReport:
    """The template's cost on the section's network, then (``template.overhead``) on a tiny
    network whose step is nearly all host time."""
    from classicnets.models import create_model

    t, bench = ctx.settings.template, ctx.bench
    size, classes = int(t.image_size), int(t.num_classes)
    net = create_model(t.model, num_classes=classes, in_channels=3, input_size=size)
    rows = _case(t, bench, net=net, case="training", model=str(t.model),
                 batch_size=int(t.batch_size), image_size=size)
    if bench.compile:  # the whole step compiled, and the network alone, vs the eager loop
        for how in ("step", "network"):
            bench.free()
            rows += _case(t, bench, net=copy.deepcopy(net), case=f"compiled {how}",
                          model=str(t.model),
                          batch_size=int(t.batch_size), image_size=size, module_compile=how)
    if t.get("overhead", False):
        tiny_size, tiny_bs = 8, int(t.get("overhead_batch_size") or 16)
        bench.free()
        torch.manual_seed(0)
        rows += _case(t, bench, net=_TinyNet(3 * tiny_size * tiny_size, classes),
                      case="host overhead", model="tiny mlp", batch_size=tiny_bs,
                      image_size=tiny_size)
    return SectionReport(rows, TITLE, _render(rows, t, bench))
