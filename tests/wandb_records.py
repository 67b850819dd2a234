"""Read back what an offline W&B run stored, without W&B's servers or its (removed) readers.

An offline run is ``<save_dir>/wandb/offline-run-<time>-<id>/``:

* ``run-<id>.wandb``: the transaction log ``wandb sync`` uploads: a 7-byte W&B header, then
  LevelDB-log framing (32 KiB blocks; each chunk: CRC32C (4 bytes), length (2, little-endian),
  type (1): full / first / middle / last) around protobuf ``Record`` messages: run (name,
  group, ...), config and summary updates, history rows, artifacts (with their manifests);
* ``files/media/``: images logged in history rows, and a preview of each table (whose media
  cells are placeholders);
* tables are logged as ``run_table`` artifacts, models as ``model`` artifacts: their files are
  staged under ``$WANDB_DATA_DIR/artifacts/staging/`` (``local_path`` in the manifest) until
  ``wandb sync`` uploads them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = 7  # ":W&B" + magic (2 bytes) + version (1 byte)
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[pb.Record]:
    """Every Record of a ``.wandb`` file, in order."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, parts = HEADER, []
    while pos + CHUNK_HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < CHUNK_HEADER:  # a block's tail too short for a chunk header is padding
            pos += room
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        if kind == 0 and length == 0:  # zero fill
            pos += room
            continue
        parts.append(data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length])
        pos += CHUNK_HEADER + length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def _set(tree: dict[str, Any], item: Any) -> None:
    keys = list(item.nested_key) or [item.key]
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = json.loads(item.value_json)


@dataclass
class OfflineRun:
    """What one offline W&B run holds."""

    dir: Path
    run: pb.RunRecord = field(default_factory=pb.RunRecord)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[pb.ArtifactRecord] = field(default_factory=list)

    @property
    def files(self) -> Path:
        return self.dir / "files"

    def column(self, key: str) -> list[Any]:
        """Every logged value of a history key, in step order."""
        return [row[key] for row in self.history if key in row]

    def artifact_file(self, artifact: pb.ArtifactRecord, suffix: str) -> Path:
        """The staged file of an artifact whose name in the artifact ends with ``suffix``."""
        for entry in artifact.manifest.contents:
            if entry.path.endswith(suffix):
                return Path(entry.local_path)
        raise KeyError(f"{artifact.name} has no {suffix}: "
                       f"{[e.path for e in artifact.manifest.contents]}")

    def table(self, key: str, step: int = -1) -> dict[str, Any]:
        """The full JSON of a logged table (media cells included), from its artifact."""
        name = key.replace("/", "")  # W&B names table artifacts run-<id>-<key without />
        matches = [a for a in self.artifacts if a.type == "run_table" and
                   a.name.startswith(f"run-{self.run.run_id}-{name}")]
        assert matches, f"no table {key}: {[a.name for a in self.artifacts]}"
        return json.loads(self.artifact_file(matches[step], ".table.json").read_text())


def _finished_records(path: Path, timeout_s: float = 60.0) -> list[pb.Record]:
    """The records of a run whose ``exit`` record is written: ``wandb.finish()`` can return
    before W&B's service process has written the last records (seen with WANDB_SILENT=true)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = list(records(path))
        except Exception:  # a record half written at this moment: read again
            found = []
        if any(r.WhichOneof("record_type") == "exit" for r in found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} has no exit record after {timeout_s} s")
        time.sleep(0.25)


def read_run(run_dir: Path) -> OfflineRun:
    """Parse ``run_dir`` (an ``offline-run-*`` folder) once W&B has finished writing it."""
    out = OfflineRun(run_dir)
    for record in _finished_records(next(run_dir.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.run = record.run
            for item in record.run.config.update:
                _set(out.config, item)
        elif kind == "config":
            for item in record.config.update:
                _set(out.config, item)
        elif kind == "summary":
            for item in record.summary.update:
                _set(out.summary, item)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set(row, item)
            out.history.append(row)
        elif kind == "artifact":
            out.artifacts.append(record.artifact)
    return out


def offline_runs(save_dir: Path) -> list[Path]:
    return sorted((save_dir / "wandb").glob("offline-run-*"))
