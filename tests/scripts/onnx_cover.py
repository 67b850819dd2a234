"""The operators each family representative of tests/test_export.py exports to, and the fewest
representatives that together use them all: how test_export.py's ONNX_COVER is chosen.

    python tests/scripts/onnx_cover.py     # a few minutes: every representative to ONNX

Per network: its ONNX operators (with the pooling attributes that change what they compute:
ceil_mode, count_include_pad; grouped convolutions marked) and the core ATen operators of its
torch.export graph. Printed: the operators only one network has, then a cover (those networks
first, then the cheapest additions) and whether ONNX_COVER still uses every operator.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

import test_export as te  # noqa: E402


def onnx_ops(path: Path) -> set[str]:
    import onnx

    ops: set[str] = set()
    for node in onnx.load(str(path)).graph.node:
        attrs = []
        for a in node.attribute:
            value = onnx.helper.get_attribute_value(a)
            if a.name in ("ceil_mode", "count_include_pad"):
                attrs.append(f"{a.name}={value}")
            if a.name == "group" and value > 1:
                attrs.append("grouped")
        ops.add(node.op_type + (f"[{','.join(sorted(attrs))}]" if attrs else ""))
    return ops


def aten_ops(trained: te.Trained) -> set[str]:
    x = torch.rand(2, *trained.input_shape)
    program = torch.export.export(trained.model, (x,),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    graph = program.run_decompositions().graph
    return {str(n.target) for n in graph.nodes if n.op == "call_function"}


def main() -> int:
    torch.set_num_threads(1)
    ops: dict[str, set[str]] = {}
    cost: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in te.FAMILIES.values():
            start = time.perf_counter()
            trained = te._trained(name, in_channels=1 if name == "lenet5" else 3)
            path = te.export_model(trained, "onnx", Path(tmp) / f"{name}.onnx",
                                   verify=False).path
            cost[name] = time.perf_counter() - start
            ops[name] = onnx_ops(path) | aten_ops(trained)
            print(f"{name}: {cost[name]:.1f} s, {sorted(ops[name])}", flush=True)
    every = set().union(*ops.values())
    only = {n: sorted(o for o in ops[n] if sum(o in ops[m] for m in ops) == 1) for n in ops}
    for name, mine in only.items():
        if mine:
            print(f"only {name}: {mine}")
    cover = [n for n in ops if only[n]]
    used = set().union(*(ops[n] for n in cover))
    while used != every:
        best = min((n for n in ops if n not in cover and ops[n] - used),
                   key=lambda n: cost[n] / len(ops[n] - used))
        cover.append(best)
        used |= ops[best]
    print(f"a cover: {cover} ({sum(cost[n] for n in cover):.0f} s of {sum(cost.values()):.0f})")
    missing = every - set().union(*(ops[n] for n in te.ONNX_COVER))
    print(f"ONNX_COVER misses: {sorted(missing)}" if missing else "ONNX_COVER uses every one")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
