"""Export a checkpoint: `python src/export.py ckpt_path=... format=onnx|torchscript`.

The exported model is :class:`~classicnets.inference.predict.NormalizedClassifier`: it takes float32
images ``(batch, C, S, S)`` with values in [0, 1] (RGB order, or one grey channel), resized and
centre-cropped as the checkpoint's evaluation transform says, normalises them inside, and
returns logits ``(batch, num_classes)``; the batch axis is dynamic. Float rather than uint8
input: a resize produces floats, and every image library gives [0, 1] floats in one call.
Class names and the transform are written into the file (ONNX ``metadata_props`` /
TorchScript extra file, key ``classicnets``) and beside it (``<model>.json``).

ONNX goes through ``torch.export`` (so a network that cannot be captured fails there, naming
its line of code) and the dynamo ONNX exporter (an operation with no ONNX translation is named
with the layer it sits in). TorchScript is ``torch.jit.trace`` (deprecated by PyTorch, still
the way to get a TorchScript file). Both are checked against PyTorch at two batch sizes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from classicnets.inference.predict import NormalizedClassifier, Trained, load_trained

__all__ = [
    "FORMATS",
    "ExportError",
    "ExportResult",
    "export",
    "export_model",
    "load_exported",
    "read_metadata",
]

log = logging.getLogger(__name__)
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
METADATA_KEY = "classicnets"
# torch.export specialises sizes 0 and 1, so the example batch must be larger to stay dynamic;
# the check then runs other sizes, 1 included
EXAMPLE_BATCH = 2
CHECK_BATCHES = (1, 3)
INSTALL_HINT = "pip install -e '.[export]' (onnx, onnxscript, onnxruntime)"


class ExportError(RuntimeError):
    """A network that cannot be exported (the message names the operation or line), or an
    exported file that does not compute what PyTorch does."""


@dataclass
class ExportResult:
    """Where the model and its metadata went, and how close the file came to PyTorch."""

    path: Path
    metadata_path: Path
    max_diff: float | None  # largest |logit difference| / max(1, largest |logit|); None: unchecked


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"format=onnx needs the {module} package: {INSTALL_HINT}") from None


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _first_line(err: BaseException) -> str:
    """The line of an error message that says what went wrong."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # the exporter colours its messages
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("The following operation failed in the TorchScript"):
        # the interpreter's traceback comes first, the error (with its type) last
        return lines[-1]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _export_gist(err: BaseException) -> str:
    """torch.export's reason: its first line and its bullet points (e.g. "your code
    specialized it to be a constant"), without the advice on logs and draft_export."""
    lines = str(err).strip().splitlines()
    bullets = [line.strip()[2:] for line in lines[1:] if line.strip().startswith("- ")]
    return "; ".join([_first_line(err), *bullets[:3]])


def _user_code(text: str) -> str:
    """The user's line torch.export stopped at ("The following call raised this error")."""
    found = re.search(r'raised this error:\s*\n\s*File "([^"]+)", line (\d+), in (\w+)\n\s*(.+)',
                      text)
    if not found:
        return ""
    file, line, func, code = found.groups()
    return f" at {file}:{line} in {func}: `{code.strip()}`"


def _layer_of(node_name: str, program: Any) -> str:
    """The module path and class of a graph node (from torch.export's nn_module_stack)."""
    for node in program.graph.nodes:
        if node.name == node_name:
            stack = node.meta.get("nn_module_stack") or {}
            if not stack:
                return ""
            path, kind = list(stack.values())[-1]
            kind = kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"
            return f" in layer `{path or '<top>'}` ({kind.rsplit('.', 1)[-1]})"
    return ""


def _describe_conversion_failure(err: BaseException, program: Any) -> str:
    text = "\n".join(str(e) for e in _chain(err))
    op = re.search(r"op='([^']+)'", text) or re.search(r"target=(?:torch\.ops\.)?([\w.]+)", text)
    node = re.search(r"translating node %(\w+)", text)
    what = f"operation `{op.group(1)}`" if op else "an operation"
    where = _layer_of(node.group(1), program) if node else ""
    innermost = list(_chain(err))[-1]  # the exporter's own wrapper says only "step 3/3"
    reason = ("has no ONNX translation" if "No ONNX function found" in text
              else f"failed to convert ({_first_line(innermost)})")
    return f"{what}{where} {reason}"


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The ONNX exporter's passes log every step at INFO (Hydra shows INFO): keep warnings."""
    loggers = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx",
                                              "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # advice on opset upgrades, deprecations
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export_onnx(model: NormalizedClassifier, example: Tensor, path: Path, name: str,
                 opset: int | None, metadata: dict[str, Any]) -> None:
    _require("onnx")
    _require("onnxscript")  # the dynamo exporter's operator library
    dims = ({0: torch.export.Dim("batch")},)
    with _quiet_exporter():
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=dims, strict=False)
        except Exception as err:
            text = "\n".join(str(e) for e in _chain(err))
            raise ExportError(f"cannot export {name} to ONNX: torch.export cannot capture it "
                              f"with a dynamic batch axis ({_export_gist(err)})"
                              f"{_user_code(text)}") from err
        try:
            onnx_program = torch.onnx.export(
                program, (example,), dynamo=True, dynamic_shapes=dims, input_names=["image"],
                output_names=["logits"], opset_version=opset, verbose=False)
        except Exception as err:
            raise ExportError(f"cannot export {name} to ONNX: "
                              f"{_describe_conversion_failure(err, program)}") from err
    onnx_program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    onnx_program.save(str(path))  # weights over 2 GB go to external data beside it


def _export_torchscript(model: NormalizedClassifier, example: Tensor, path: Path, name: str,
                        metadata: dict[str, Any]) -> list[str]:
    """Trace and save; returns the tracer's warnings (shown only if the check then fails)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*is deprecated", category=Warning)
        try:
            traced = torch.jit.trace(model, example, check_trace=False)
        except Exception as err:
            raise ExportError(f"cannot export {name} to TorchScript: tracing failed "
                              f"({_first_line(err)})") from err
    traced.save(str(path), _extra_files={f"{METADATA_KEY}.json": json.dumps(metadata)})
    return [f"{Path(w.filename).name}:{w.lineno}: {str(w.message).splitlines()[0]}"
            for w in caught if issubclass(w.category, torch.jit.TracerWarning)]


def load_exported(path: str | Path, fmt: str) -> Callable[[Tensor], Tensor]:
    """A function that runs an exported file (onnxruntime for ONNX) on a float image batch."""
    if fmt == "onnx":
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # no oversubscription
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is deprecated", category=Warning)
        scripted = torch.jit.load(str(path), map_location="cpu")

    def run(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return scripted(x)

    return run


def read_metadata(path: str | Path, fmt: str) -> dict[str, Any]:
    """The ``classicnets`` metadata written into an exported file."""
    if fmt == "onnx":
        onnx = _require("onnx")
        model = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
        return json.loads(props[METADATA_KEY])
    files = {f"{METADATA_KEY}.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is deprecated", category=Warning)
        torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return json.loads(files[f"{METADATA_KEY}.json"])


def _rounding_noise(model: NormalizedClassifier, x: Tensor, want: Tensor,
                    got: Tensor) -> tuple[float, float]:
    """(|PyTorch float32 − float64|, |exported − PyTorch float64|), largest logit each: a deep
    network with large activations differs from itself in float32 by more than any fixed
    tolerance, and an exported file is as good as PyTorch when it is as close to float64."""
    import copy

    exact = copy.deepcopy(model).double()  # only on this rare path: twice the weights' memory
    with torch.inference_mode():
        ref = exact(x.double())
    del exact
    return float((want.double() - ref).abs().max()), float((got.double() - ref).abs().max())


def _check(path: Path, fmt: str, name: str, model: NormalizedClassifier,
           shape: tuple[int, ...], tolerance: float, tracer_warnings: list[str]) -> float:
    """Largest logit difference to PyTorch (relative to max(1, |logit|)) over CHECK_BATCHES.

    A difference over ``tolerance`` still passes (with a warning) when the file is no farther
    from PyTorch's float64 result than twice PyTorch's own float32 result is."""
    hint = ("; the tracer warned: " + " | ".join(dict.fromkeys(tracer_warnings))
            if tracer_warnings else "")
    run = load_exported(path, fmt)
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch in CHECK_BATCHES:
        x = torch.rand(batch, *shape, generator=g)
        with torch.inference_mode():
            want = model(x)
        try:
            got = run(x)
        except Exception as err:
            raise ExportError(f"the exported {fmt} file of {name} fails at batch size {batch} "
                              f"({_first_line(err)}){hint}") from err
        if got.shape != want.shape:
            raise ExportError(f"the exported {fmt} file of {name} gives shape "
                              f"{tuple(got.shape)} at batch size {batch}, PyTorch "
                              f"{tuple(want.shape)}{hint}")
        scale = max(1.0, float(want.abs().max()))
        diff = float((got - want).abs().max()) / scale
        if not diff <= tolerance:  # also catches NaN
            noise, error = _rounding_noise(model, x, want, got)
            if not error <= 2 * noise:
                raise ExportError(
                    f"the exported {fmt} file of {name} ({path}) differs from PyTorch by "
                    f"{diff:.2e} (relative to the logit scale) at batch size {batch}, over "
                    f"tolerance={tolerance:g}; from float64 PyTorch it differs by "
                    f"{error / scale:.2e}, float32 PyTorch by {noise / scale:.2e}{hint}")
            log.warning("%s: the exported file differs from PyTorch by %.2e (relative) at "
                        "batch size %d, over tolerance=%g, but float32 PyTorch itself is "
                        "%.2e from float64 (the file %.2e): float32 rounding, accepted",
                        name, diff, batch, tolerance, noise / scale, error / scale)
        worst = max(worst, diff)
    return worst


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt}: choose one of {', '.join(FORMATS)}")


def export_model(trained: Trained, fmt: str, path: str | Path, *, opset: int | None = None,
                 verify: bool = True, tolerance: float = 1e-4) -> ExportResult:
    """Write ``trained`` as ``fmt`` (``onnx`` or ``torchscript``) to ``path`` with its metadata
    beside it, and (``verify``) check the file against PyTorch at two batch sizes."""
    _check_format(fmt)
    if verify and fmt == "onnx":
        _require("onnxruntime")  # before minutes of exporting, not after
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model, name = trained.model.cpu().eval(), trained.model_name
    example = torch.rand(EXAMPLE_BATCH, *trained.input_shape,
                         generator=torch.Generator().manual_seed(0))
    metadata = trained.metadata()
    warned: list[str] = []
    if fmt == "onnx":
        _export_onnx(model, example, path, name, opset, metadata)
    else:
        warned = _export_torchscript(model, example, path, name, metadata)
    meta_path = path.with_suffix(".json")
    meta_path.write_text(json.dumps({"format": fmt, "file": path.name, **metadata}, indent=2))
    diff = (_check(path, fmt, name, model, trained.input_shape, tolerance, warned)
            if verify else None)
    return ExportResult(path=path, metadata_path=meta_path, max_diff=diff)


def export(cfg: DictConfig) -> ExportResult:
    """What `src/export.py` does: export `cfg.ckpt_path` as `cfg.format`."""
    fmt = str(cfg.format)
    _check_format(fmt)  # before the checkpoint is read
    trained = load_trained(cfg.ckpt_path, cfg.get("data"),
                           weights=str(cfg.get("weights", "model")))
    path = Path(cfg.output) if cfg.get("output") else (
        Path(cfg.paths.output_dir) / f"{trained.model_name}{FORMATS[fmt]}")
    result = export_model(trained, fmt, path, opset=cfg.get("opset"),
                          verify=bool(cfg.get("verify", True)),
                          tolerance=float(cfg.get("tolerance", 1e-4)))
    c, s = trained.transform.in_channels, trained.transform.image_size
    names = ("'image' ", "'logits' ") if fmt == "onnx" else ("", "")
    print(f"exported {trained.model_name} ({fmt}): {result.path}\n"
          f"  input  {names[0]}float32 (batch, {c}, {s}, {s}), values in [0, 1], resized to "
          f"{trained.transform.resize_size} px (shorter side) and centre-cropped to {s}; "
          "normalisation inside\n"
          f"  output {names[1]}logits (batch, {len(trained.classes)}); class names and "
          f"transform in "
          f"{result.metadata_path}")
    if result.max_diff is not None:
        print(f"  checked against PyTorch at batch sizes {', '.join(map(str, CHECK_BATCHES))}: "
              f"max |diff| {result.max_diff:.1e} (relative to the logit scale)")
    return result
