"""Reading checkpoint and weights files: the one place the project unpickles anything.

Every entry point (train, eval, predict, export, visualize, ``model.pretrained=<file>``) and
every library loader reads files through :func:`load_file`, which uses
``torch.load(weights_only=True)``: tensors, numbers, strings and plain containers load;
anything else (a class the file names, a function it calls) is refused before it runs, with
a message naming the file, the refused type and the opt-in.

The opt-in is explicit and logged: ``trust_checkpoint=true`` on the command line (the entry
points wrap their job in :func:`trusting`), or ``trust=True`` in the library calls. A file the
user trusts but that holds such objects can be re-saved with plain values once::

    python src/checkpoint.py resave <file>           # writes <file> back, weights-only safe
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

import torch

__all__ = [
    "RESAVE_COMMAND",
    "CheckpointError",
    "UntrustedCheckpointError",
    "check_targets",
    "describe_file",
    "is_trusted",
    "load_file",
    "plain_values",
    "resave",
    "trusting",
]

log = logging.getLogger(__name__)

RESAVE_COMMAND = "python src/checkpoint.py resave {path}"
_TRUST: list[bool] = [False]  # the innermost `trusting(...)` block's choice


class CheckpointError(RuntimeError):
    """A checkpoint path that does not exist or a file that is not a classicnets checkpoint."""


class UntrustedCheckpointError(CheckpointError):
    """A file that needs more than the weights-only loader allows: loading it could run code."""

    def __init__(self, message: str, refused: str) -> None:
        super().__init__(message)
        self.refused = refused


@contextlib.contextmanager
def trusting(trust: bool) -> Iterator[None]:
    """Within the block, :func:`load_file` calls that do not pass ``trust`` use this choice
    (the ``trust_checkpoint`` config value of the entry points)."""
    _TRUST.append(bool(trust))
    try:
        yield
    finally:
        _TRUST.pop()


def is_trusted() -> bool:
    """The choice of the innermost :func:`trusting` block (False outside any)."""
    return _TRUST[-1]


# ---------------------------------------------------------------------------- what a file is
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "an executable"),
    (b"version https://git-lfs", "a Git LFS pointer (run git lfs pull to fetch the file)"),
)


def describe_file(path: Path) -> str | None:
    """What ``path`` is when it is plainly not a torch checkpoint (None when it may be one)."""
    if path.is_dir():
        return "a directory"
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes)"
    with path.open("rb") as f:
        head = f.read(64)
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch's zip, or legacy pickle
        return None
    if len(head) >= 9 and head[8:9] == b"{" and size > int.from_bytes(head[:8], "little"):
        return "a safetensors file (use model.pretrained=<file>.safetensors for weights)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"a {size}-byte file in no format torch writes"
    return f"a text file (it starts {text.splitlines()[0][:40]!r})" if text.strip() else (
        "a file of blanks")


def _refused_global(err: BaseException) -> str | None:
    """The type a weights-only load refused, from torch's message."""
    match = re.search(r"GLOBAL ([\w.]+)", str(err))
    return match.group(1) if match else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def load_file(path: str | os.PathLike, *, trust: bool | None = None, what: str = "checkpoint",
              map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load`` a checkpoint or weights file, weights-only unless trusted.

    Args:
        path: the file.
        trust: unpickle in full (the file can run code): only for a file the user made or
            trusts; logged. ``None``: the enclosing :func:`trusting` block's choice.
        what: what the file is for, in messages ("checkpoint", "weights file", ...).
        map_location: as ``torch.load``.
        mmap: memory-map the tensors (zip files only; other files are read whole).

    Raises:
        CheckpointError: no such file, or a file that is not a torch checkpoint (named what it
            is instead: a directory, an empty, truncated or foreign file).
        UntrustedCheckpointError: the file holds objects beyond plain values (named).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{what} {path} does not exist")
    other = describe_file(path)
    if other is not None:
        raise CheckpointError(f"{path} is {other}, not a torch {what}")
    trust = is_trusted() if trust is None else trust
    if trust:
        log.warning("trust_checkpoint=true: unpickling %s in full (code in the file can run); "
                    "only for a file you made or trust", path)
    with path.open("rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust,
                          mmap=mmap and zipped)
    except pickle.UnpicklingError as err:
        refused = _refused_global(err)
        if trust or refused is None:
            reason = ("its pickle data is damaged or was not written by torch.save"
                      if "Weights only load failed" in str(err) else _first_line(err))
            raise CheckpointError(f"{path} is not a readable torch {what} ({reason})") from None
        raise UntrustedCheckpointError(
            f"{path} holds a {refused} object, which the weights-only loader refuses: "
            f"unpickling it could run code from the file. If you made this file or trust its "
            f"source, pass trust_checkpoint=true (logged), or re-save it once with plain values: "
            f"{RESAVE_COMMAND.format(path=path)}", refused) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        reason = _first_line(err)
        if "central directory" in reason or isinstance(err, EOFError):
            reason = "truncated or damaged: its archive ends early"
        raise CheckpointError(f"{path} is not a readable torch {what} ({reason}); check the "
                              f"file is complete") from None


# ---------------------------------------------------------------------------- named code
# A weights-only file can still name code: a Hydra ``_target_`` among the hyperparameters is
# imported and called when the module is rebuilt (Lightning 2.6.6 closed the same hole for
# its own ``_instantiator`` key). Ours name the network factory and an optimizer: torch's, or
# one of the two we ship on timm's (conf/optimizer/lamb.yaml, lars.yaml).
SAFE_TARGETS = ("classicnets.models.create_model", "classicnets.training.optim.lamb",
                "classicnets.training.optim.lars")


def _targets(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "_target_":
                yield where or "the config", str(value)
            else:
                yield from _targets(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from _targets(value, f"{where}[{i}]")


def _safe_target(target: str) -> bool:
    if target in SAFE_TARGETS:
        return True
    module, _, name = target.rpartition(".")
    if module == "torch.optim":  # a torch optimizer class, looked up without importing
        obj = getattr(torch.optim, name, None)
        return isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)
    return False


def check_targets(hyper_parameters: Any, path: str | os.PathLike) -> None:
    """Refuse hyperparameters whose Hydra ``_target_`` names anything but the network factory,
    a torch optimizer or our LAMB/LARS: rebuilding the module would import and call it."""
    for where, target in _targets(hyper_parameters):
        if not _safe_target(target):
            raise UntrustedCheckpointError(
                f"{path} names {target!r} as {where}._target_, which rebuilding its module would "
                f"call; classicnets checkpoints name {', '.join(SAFE_TARGETS)} or a torch.optim "
                f"optimizer there. If you made this file or trust its source, pass "
                f"trust_checkpoint=true (logged)", target)


# ---------------------------------------------------------------------------- re-saving
def plain_values(obj: Any) -> Any:
    """``obj`` with every container made a plain ``dict``/``list`` and every value a tensor,
    number, string, bool or None (paths and enums become strings, configs containers), so
    that ``torch.load(weights_only=True)`` reads it back. Other objects raise TypeError."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(obj, DictConfig | ListConfig):
        return plain_values(OmegaConf.to_container(obj, resolve=True))
    if torch.is_tensor(obj) or obj is None or isinstance(obj, bool | int | float | str | bytes):
        return obj
    if isinstance(obj, torch.dtype | torch.device | torch.Size):  # torch's own, allowed
        return obj
    if isinstance(obj, Enum):
        return plain_values(obj.value)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, Mapping):
        return {(k if isinstance(k, str | int) else str(k)): plain_values(v)
                for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [plain_values(v) for v in obj] if not isinstance(obj, tuple) else tuple(
            plain_values(v) for v in obj)
    raise TypeError(f"{type(obj).__module__}.{type(obj).__qualname__} has no plain form")


def resave(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Read a trusted checkpoint in full and write it back with plain values only (to ``out``,
    else in place, atomically); the result is checked to load weights-only."""
    path = Path(path).expanduser()
    target = Path(out).expanduser() if out is not None else path
    obj = load_file(path, trust=True)
    plain = plain_values(obj)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(plain, tmp)
        load_file(tmp, trust=False)  # the point of re-saving: it must now load weights-only
        shutil.move(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return target
