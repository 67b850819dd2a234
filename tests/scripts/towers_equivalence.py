"""Run under torchrun (2 or 4 CPU processes, gloo): the tower-parallel AlexNet against the
single-process grouped AlexNet with the same weights.

Every process builds the same full network (same seed) as its reference, splits a copy over a
(replicas × 2 towers) mesh, and runs one training step on its replica's share of one batch
while the reference runs the whole batch. Written to ``<out>/rank<r>.json``: the largest
differences of logits, of every parameter's gradient and of every weight after one SGD step
(each relative to that tensor's largest magnitude), the parameters this process holds, and the
widths of the activations that crossed between the towers, in order.

    torchrun --nproc_per_node=2 tests/scripts/towers_equivalence.py OUT [--size 227]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from classicnets.models import create_model
from classicnets.parallel import towers as towers_mod
from classicnets.parallel.towers import TowerAlexNet, average_gradients, local_numel


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--classes", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    replicas = world // 2
    mesh = init_device_mesh("cpu", (replicas, 2), mesh_dim_names=("data_parallel",
                                                                 "tensor_parallel"))
    replica = mesh["data_parallel"].get_local_rank()

    torch.manual_seed(0)  # the same network, batch and labels on every process
    # dropout 0: the two runs would draw different masks; the paper's initialisation
    net = create_model("alexnet", num_classes=args.classes, input_size=args.size, dropout=0.0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, args.classes, (args.batch,))
    ref = net.train()
    towers = TowerAlexNet(copy.deepcopy(net), mesh["tensor_parallel"]).train()

    crossings: list[int] = []
    gather = towers_mod.gather_channels

    def counting_gather(t: torch.Tensor, group: dist.ProcessGroup, sizes: list[int],
                        **kw: bool) -> torch.Tensor:
        crossings.append(sum(sizes))
        return gather(t, group, sizes, **kw)

    towers_mod.gather_channels = counting_gather  # type: ignore[assignment]

    share = args.batch // replicas
    mine = slice(replica * share, (replica + 1) * share)
    ref_logits = ref(x)
    F.cross_entropy(ref_logits, y).backward()
    logits = towers(x[mine])
    F.cross_entropy(logits, y[mine]).backward()
    if replicas > 1:
        average_gradients(towers.parameters(), mesh["data_parallel"].get_group())

    ref_params = dict(ref.named_parameters())
    grads = {name: _rel(_full(p.grad), ref_params[name].grad)
             for name, p in towers.named_parameters()}
    opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            for m in (ref, towers)]
    for opt in opts:
        opt.step()
    weights = {name: _rel(_full(p.detach()), ref_params[name].detach())
               for name, p in towers.named_parameters()}
    result = {
        "rank": rank, "world": world, "replica": replica, "tower": towers.tower,
        "local_params": local_numel(towers),
        "full_params": sum(p.numel() for p in ref.parameters()),
        "logits": _rel(logits.detach(), ref_logits[mine].detach()),
        "logits_scale": float(ref_logits.detach().abs().max()),
        "grads": grads, "weights": weights, "crossings": crossings,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"rank{rank}.json").write_text(json.dumps(result, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
