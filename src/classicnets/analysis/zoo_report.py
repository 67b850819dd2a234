"""The zoo report: every registered network measured side by side at one input size.

    python src/report.py [overrides]          # or: classicnets-report

For each selected network (``models=all`` or a list, minus ``exclude``), built for
``image_size`` / ``num_classes`` / ``in_channels`` (a dataset's with ``data=<name>``):

* **parameters**: ``sum(p.numel())`` of the network as built (buffers excluded);
* **MACs**: multiply-accumulates of one image's forward pass, from
  :class:`torch.utils.flop_counter.FlopCounterMode`, which counts 2 FLOPs per multiply-add of
  convolutions, matrix products (linear layers, attention) and scaled-dot-product attention:
  MACs = FLOPs / 2. Element-wise work (bias, normalisation, activations, pooling, additions) is
  not counted, as in the papers' own counts;
* **activation memory**: bytes of the tensors the forward pass of a training step saves for
  backward (``torch.autograd.graph.saved_tensors_hooks``; each storage counted once, the
  parameters themselves excluded), for one batch of ``batch_size``; on CUDA also the peak
  memory allocated during a step beyond the network's weights;
* **images/s**: forward + cross-entropy + backward on random inputs, timed with the
  benchmark's windows (:mod:`classicnets.benchmark.measure`); median over rounds;
* **paper top-1**: the accuracy the network's paper reports (``ModelInfo.result``: dataset,
  table, year), for the paper's own configuration — not a measurement of this run.

Networks that cannot take the chosen size (or fail to build or run) are listed with the reason
instead of stopping the report. Outputs go to the run directory: ``zoo.md``, ``zoo.csv``,
``zoo_accuracy_vs_macs.png`` and ``zoo_params_by_year.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

from classicnets.models import create_model, get_model_info, list_models
from classicnets.models.registry import InputSizeError
from classicnets.models.table import count_macs  # one definition of MACs: the docs' and ours

__all__ = [
    "CSV_COLUMNS",
    "ZooRow",
    "count_macs",
    "plot_accuracy_vs_macs",
    "plot_params_by_year",
    "run_report",
    "saved_activation_bytes",
    "select_models",
]

log = logging.getLogger(__name__)

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


@dataclass
class ZooRow:
    """One network's line of the report (NaN / empty: not measured)."""

    model: str
    family: str
    year: int
    status: str  # measured | not timed | cannot run
    reason: str
    image_size: int
    num_classes: int
    in_channels: int
    params: int = 0
    macs: int = 0
    activation_mib: float = math.nan
    peak_mem_mib: float = math.nan
    batch_size: int = 0
    images_per_s: float = math.nan
    ms_per_step: float = math.nan
    spread_pct: float = math.nan
    canonical_input: str = ""
    canonical_params: int = 0
    canonical_macs: int = 0
    paper_top1: float = math.nan
    paper_dataset: str = ""
    paper_source: str = ""
    paper: str = ""


CSV_COLUMNS = [f.name for f in fields(ZooRow)]


# ---------------------------------------------------------------------------- counting
def _logits(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)  # our ClassifierOutput (aux heads in training mode)
    return logits if isinstance(logits, Tensor) else out[0]


def _loss(out: Any, y: Tensor) -> Tensor:
    """Cross-entropy of the main logits, plus 0.3 × each auxiliary head's (GoogLeNet's weight),
    so a training step exercises the aux heads as training does."""
    loss = F.cross_entropy(_logits(out).float(), y)
    for aux in getattr(out, "aux_logits", None) or ():
        loss = loss + 0.3 * F.cross_entropy(aux.float(), y)
    return loss


def saved_activation_bytes(model: nn.Module, x: Tensor, y: Tensor) -> int:
    """Bytes the forward pass (and loss) of a training step keep for backward.

    Every tensor autograd saves goes through ``saved_tensors_hooks``; tensors that share a
    storage (a view saved twice, a ReLU output that is also the next conv's input) are counted
    once, and storages of the parameters are left out: they are weights, not activations."""
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_storages:
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        # detached: a saved output that kept its grad_fn would close a reference cycle through
        # autograd's C++ graph, which Python's collector cannot see (0.26 GB kept per call for
        # DenseNet-BC-100 at batch 8; a report over the zoo reached 20 GB)
        return t.detach()

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = _loss(model(x), y)
    del loss  # frees the graph and what it saved
    return sum(seen.values())


def _meta_figures(name: str, kwargs: dict[str, int]) -> tuple[int, int]:
    """Parameters and MACs of ``name`` built with ``kwargs`` on the meta device: no memory and
    no initialisation, so even ViT-H costs nothing."""
    with torch.device("meta"):
        model = create_model(name, **kwargs)
        x = torch.empty(1, kwargs["in_channels"], kwargs["input_size"], kwargs["input_size"])
    return sum(p.numel() for p in model.parameters()), count_macs(model, x)


def _figures(name: str, kwargs: dict[str, int]) -> tuple[int, int]:
    """:func:`_meta_figures`, falling back to a real CPU build for a network whose forward
    needs real values (a data-dependent branch fails on meta tensors)."""
    try:
        return _meta_figures(name, kwargs)
    except InputSizeError:
        raise
    except Exception as err:  # any meta-device gap: count on real tensors
        log.debug("%s: meta-device count failed (%s); counting on the CPU", name, err)
    model = create_model(name, **kwargs)
    x = torch.zeros(1, kwargs["in_channels"], kwargs["input_size"], kwargs["input_size"])
    return sum(p.numel() for p in model.parameters()), count_macs(model, x)


# ---------------------------------------------------------------------------- selection
def select_models(models: Any, exclude: Iterable[str] = ()) -> list[str]:
    """``models`` (``"all"`` or names) minus ``exclude``; unknown names fail before anything is
    measured, with the closest registered names."""
    if isinstance(models, str):
        if models != "all":
            raise ValueError(
                f"models={models!r}: give models=all or a list, e.g. models=[resnet18,vgg16]"
            )
        names = list_models()
    else:
        names = [str(n) for n in models]
        if not names:
            raise ValueError("models=[] selects nothing: give models=all or a list of names")
    exclude = [str(n) for n in exclude]
    for name in [*names, *exclude]:
        get_model_info(name)  # UnknownModelError with suggestions
    return [n for n in dict.fromkeys(names) if n not in exclude]


def _positive_int(cfg: DictConfig, key: str) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r} must be a positive integer (e.g. {key}=32)")
    return value


# ---------------------------------------------------------------------------- measuring
def _measure(name: str, s: dict[str, Any], bench: Any) -> ZooRow:
    info = get_model_info(name)
    kwargs = {
        "num_classes": s["num_classes"],
        "in_channels": s["in_channels"],
        "input_size": s["image_size"],
    }
    result = info.result
    row = ZooRow(
        model=name,
        family=info.family,
        year=info.year,
        status="measured",
        reason="",
        image_size=s["image_size"],
        num_classes=s["num_classes"],
        in_channels=s["in_channels"],
        canonical_input=f"{info.in_channels}×{info.input_size}×{info.input_size}",
        paper_top1=math.nan if result is None or result.top1 is None else result.top1,
        paper_dataset="" if result is None else result.dataset,
        paper_source="not recorded" if result is None else result.source,
        paper=f"{info.paper} ({info.year})",
    )
    row.canonical_params, row.canonical_macs = _figures(name, info.canonical_kwargs)
    try:
        row.params, row.macs = _figures(name, kwargs)
    except Exception as err:  # listed with its reason; the report goes on
        row.status, row.reason = "cannot run", _reason(err)
        log.warning("%s cannot run at %d px: %s", name, s["image_size"], row.reason)
        return row
    limit = s["max_params"]
    if limit is not None and row.params > limit:
        row.status = "not timed"
        row.reason = f"{row.params / 1e6:,.0f} M parameters > timing.max_params={limit:,}"
        return row
    try:
        _run_network(name, kwargs, row, s, bench)
    except Exception as err:  # likewise: listed, not raised
        row.status, row.reason = "cannot run", _reason(err)
        log.warning("%s failed at %d px: %s", name, s["image_size"], row.reason)
    finally:
        bench.free()
    return row


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    return first if isinstance(err, InputSizeError) else f"{type(err).__name__}: {first}"


def _run_network(
    name: str, kwargs: dict[str, int], row: ZooRow, s: dict[str, Any], bench: Any
) -> None:
    """Activation memory and forward+backward speed of the real network on ``bench.device``."""
    from classicnets.benchmark.measure import alternate, summarise

    bs = s["batch_size"]
    net = bench.place(create_model(name, **kwargs)).train()
    x = bench.images(bs, kwargs["input_size"], kwargs["in_channels"])
    y = torch.randint(0, kwargs["num_classes"], (bs,), device=bench.device)
    with bench.autocast():
        row.activation_mib = saved_activation_bytes(net, x, y) / 2**20
    row.batch_size = bs

    def step() -> None:
        net.zero_grad(set_to_none=True)
        with bench.autocast():
            loss = _loss(net(x), y)
        loss.backward()

    if bench.cuda:
        step()  # allocate the gradients first: the peak below is one step's activations
        bench.sync()
        torch.cuda.reset_peak_memory_stats(bench.device)
        base = torch.cuda.memory_allocated(bench.device)
        step()
        bench.sync()
        row.peak_mem_mib = (torch.cuda.max_memory_allocated(bench.device) - base) / 2**20
    t = s["timing"]
    if not t["enabled"]:
        row.status, row.reason = "not timed", "timing.enabled=false"
        return
    windows = alternate(
        {"train": step},
        rounds=t["rounds"],
        warmup={"train": t["warmup_steps"]},
        window=t["window_steps"],
        min_window_s=t["min_window_s"],
        sync=bench.sync,
        label=f"report {name}",
        batch=bs,
    )
    summary = summarise(windows["train"], bs)
    row.images_per_s = summary["images_per_s"]
    row.ms_per_step = summary["ms_per_step"]
    row.spread_pct = summary["spread_pct"]


# ---------------------------------------------------------------------------- rendering
def _num(value: float, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(
        value, spec
    )


def _macs(macs: int) -> str:
    if macs >= 10**9:
        return f"{macs / 1e9:.2f} G"
    if macs >= 10**6:
        return f"{macs / 1e6:.1f} M"
    return f"{macs / 1e3:.1f} k"


def _paper_cell(row: ZooRow) -> str:
    if math.isnan(row.paper_top1):
        return f"none: {row.paper_source}"
    return f"{row.paper_top1:.2f} % {row.paper_dataset} ({row.paper_source})"


def render_markdown(rows: Sequence[ZooRow], s: dict[str, Any], info: dict[str, str]) -> str:
    """zoo.md: settings, method, the table of measured networks, and the ones that did not run."""
    from classicnets.benchmark.tables import table

    size, bs = s["image_size"], s["batch_size"]
    ran = [r for r in rows if r.status != "cannot run"]
    failed = [r for r in rows if r.status == "cannot run"]
    md = [
        "# Zoo report",
        "",
        f"{len(ran)} of {len(rows)} networks at {s['in_channels']}×{size}×{size}, "
        f"{s['num_classes']} classes ({s['dataset']}); batch {bs}, device {s['device']}, "
        f"precision {s['precision']}.",
        "",
        f"- machine: {info.get('cpu', '?')}; GPU: {info.get('gpu', 'none')}",
        f"- software: {info.get('software', '?')}",
        "- **MACs**: multiply-accumulates of one image's forward pass = FLOPs / 2 as counted by "
        "`torch.utils.flop_counter.FlopCounterMode` (convolutions, linear layers, matmuls, "
        "attention; element-wise ops, normalisation and pooling not counted).",
        f"- **activations**: MiB saved for backward by one training forward of {bs} images "
        "(`saved_tensors_hooks`, each storage once, parameters excluded)"
        + ("; **peak**: CUDA memory allocated during a step beyond weights and gradients."
           if s["device"].startswith("cuda") else "."),
        "- **images/s**: forward + cross-entropy + backward (no optimizer step) on random "
        f"inputs, median of {s['timing']['rounds']} windows "
        "(`classicnets.benchmark.measure`).",
        "- **paper top-1**: the figure the network's paper reports for its own configuration "
        "(canonical input, its dataset), converted from error where the paper prints error; "
        "not measured here. Canonical MACs are at that configuration.",
        "",
    ]
    header = ["model", "year", "params", "MACs", "activations MiB", "images/s", "ms/step",
              "canonical input", "canonical MACs", "paper top-1 (source)"]
    if s["device"].startswith("cuda"):
        header.insert(5, "peak MiB")
    lines = []
    for r in sorted(ran, key=lambda r: (r.year, r.model)):
        line = [f"`{r.model}`", str(r.year), f"{r.params:,}", _macs(r.macs),
                _num(r.activation_mib, ".1f"), _num(r.images_per_s, ",.1f"),
                _num(r.ms_per_step, ",.1f"), r.canonical_input, _macs(r.canonical_macs),
                _paper_cell(r)]
        if s["device"].startswith("cuda"):
            line.insert(5, _num(r.peak_mem_mib, ",.0f"))
        lines.append(line)
    md += table(header, lines)
    untimed = [r for r in ran if r.status == "not timed"]
    if untimed:
        md += ["", "## Not timed", ""]
        md += [f"- `{r.model}`: {r.reason}" for r in untimed]
    if failed:
        md += ["", f"## Cannot run at {size} px", ""]
        md += [f"- `{r.model}`: {r.reason}" for r in failed]
    return "\n".join(md)


def write_csv(rows: Sequence[ZooRow], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow(dataclasses.asdict(r))


# ---------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window, also on machines without a display
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_macs(rows: Sequence[ZooRow], path: Path) -> Path:
    """Paper top-1 against canonical MACs, one panel per dataset the figures are on; bubble
    area ∝ canonical parameters, each bubble labelled with the network's name."""
    plt = _pyplot()
    with_figure = [r for r in rows if not math.isnan(r.paper_top1)]
    datasets = sorted({r.paper_dataset for r in with_figure}, key=lambda d: d != "ImageNet")
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(7 * max(1, len(datasets)), 6),
                             squeeze=False)
    if not datasets:
        axes[0][0].text(0.5, 0.5, "no paper figures among the selected networks",
                        ha="center", va="center")
        axes[0][0].set_axis_off()
    biggest = max((r.canonical_params for r in with_figure), default=1)
    for ax, dataset in zip(axes[0], datasets):
        pts = [r for r in with_figure if r.paper_dataset == dataset]
        xs = [r.canonical_macs / 1e9 for r in pts]
        ys = [r.paper_top1 for r in pts]
        sizes = [20 + 1500 * r.canonical_params / biggest for r in pts]
        ax.scatter(xs, ys, s=sizes, alpha=0.45, edgecolors="k", linewidths=0.5)
        for r, x, y in zip(pts, xs, ys):
            ax.annotate(r.model, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if min(xs) > 0:
            ax.set_xscale("log")
        ax.set_xlabel("GMACs per image at the paper's input size")
        ax.set_ylabel(f"top-1 % reported by the paper ({dataset})")
        ax.set_title(f"{dataset}: accuracy vs compute (bubble area ∝ parameters)")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_params_by_year(rows: Sequence[ZooRow], path: Path) -> Path:
    """Canonical parameter count of every network against its paper's year (log scale),
    coloured by family and labelled."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 7))
    families = sorted({r.family for r in rows})
    cmap = plt.get_cmap("tab20")
    per_year: dict[int, int] = {}
    for r in sorted(rows, key=lambda r: (r.year, r.canonical_params)):
        k = per_year.get(r.year, 0)
        per_year[r.year] = k + 1
        x = r.year + 0.08 * ((k % 5) - 2)  # spread a year's networks so labels separate
        colour = cmap(families.index(r.family) % 20)
        ax.scatter([x], [r.canonical_params], color=colour, edgecolors="k", linewidths=0.4,
                   label=r.family)
        ax.annotate(r.model, (x, r.canonical_params), fontsize=5.5, xytext=(3, 2),
                    textcoords="offset points")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, ncol=2, loc="upper left")
    if rows and min(r.canonical_params for r in rows) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("year of the paper")
    ax.set_ylabel("parameters (canonical configuration)")
    ax.set_title("Parameters by year")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- entry
def _output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # called outside Hydra
        return Path.cwd()


def _settings(cfg: DictConfig) -> dict[str, Any]:
    """The validated settings of a run (bad values fail here, before any network is built)."""
    from classicnets.benchmark.settings import resolve_device

    names = select_models(
        cfg.get("models", "all") if not isinstance(cfg.get("models"), ListConfig)
        else list(cfg.models), list(cfg.get("exclude") or []))
    precision = str(cfg.get("precision", "32-true"))
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    timing = OmegaConf.to_container(cfg.get("timing") or {}, resolve=True)
    t = {
        "enabled": bool(timing.get("enabled", True)),
        "rounds": int(timing.get("rounds", 3)),
        "warmup_steps": int(timing.get("warmup_steps", 1)),
        "window_steps": int(timing.get("window_steps", 1)),
        "min_window_s": float(timing.get("min_window_s", 0.5)),
    }
    for knob in ("rounds", "window_steps"):
        if t[knob] < 1:
            raise ValueError(f"timing.{knob}={t[knob]} must be a positive integer")
    if t["warmup_steps"] < 0 or t["min_window_s"] < 0:
        raise ValueError("timing.warmup_steps and timing.min_window_s must be >= 0")
    max_params = timing.get("max_params")
    data = cfg.get("data")
    return {
        "models": names,
        "image_size": _positive_int(cfg, "image_size"),
        "num_classes": _positive_int(cfg, "num_classes"),
        "in_channels": _positive_int(cfg, "in_channels"),
        "batch_size": _positive_int(cfg, "batch_size"),
        "device": str(resolve_device(cfg.get("device", "auto"))),
        "precision": precision,
        "channels_last": bool(cfg.get("channels_last", False)),
        "timing": t,
        "max_params": None if max_params is None else int(max_params),
        "dataset": f"shape of data={data.name}" if data else "random inputs",
        "plots": bool(cfg.get("plots", True)),
    }


def run_report(cfg: DictConfig) -> list[ZooRow]:
    """Measure the selected networks; write zoo.md, zoo.csv and the plots to the run directory
    (the tables after every network, so an interrupted run keeps what it measured)."""
    from classicnets.benchmark.device import Bench
    from classicnets.benchmark.tables import machine_info

    s = _settings(cfg)
    out_dir = _output_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(int(cfg.get("seed", 0)))
    bench = Bench(device=torch.device(s["device"]), precision=s["precision"],
                  channels_last=s["channels_last"], compile=False, cudnn_benchmark=True,
                  out_dir=out_dir)
    if bench.cuda:
        torch.backends.cudnn.benchmark = True
    info = machine_info(bench)
    log.info("zoo report: %d networks at %d px on %s", len(s["models"]), s["image_size"],
             s["device"])
    rows: list[ZooRow] = []
    for name in s["models"]:
        start = time.perf_counter()
        rows.append(_measure(name, s, bench))
        r = rows[-1]
        log.info("%s: %s, %s params, %s MACs, %s images/s (%.1f s)", name, r.status,
                 f"{r.params:,}", _macs(r.macs), _num(r.images_per_s, ",.1f"),
                 time.perf_counter() - start)
        (out_dir / "zoo.md").write_text(render_markdown(rows, s, info) + "\n")
        write_csv(rows, out_dir / "zoo.csv")
    if s["plots"]:
        plot_accuracy_vs_macs(rows, out_dir / "zoo_accuracy_vs_macs.png")
        plot_params_by_year(rows, out_dir / "zoo_params_by_year.png")
    print(render_markdown(rows, s, info))
    log.info("wrote zoo.md, zoo.csv and plots to %s", out_dir)
    return rows

