"""Measure AlexNet's towers against data parallelism on two processes (benchmark ``towers``).

Two processes (gloo on the CPU, NCCL on two GPUs) each hold both layouts of the same network:

* ``towers``: :class:`TowerAlexNet`, half of every layer per process, the whole global batch
  through both halves, activations exchanged into conv3, FC6, FC7, FC8 and the logits;
* ``ddp``: the whole grouped AlexNet per process in ``DistributedDataParallel``, half of the
  global batch each, gradients all-reduced.

Each runs SGD with momentum; windows of the two alternate round by round. Reported per process:
parameters, and the bytes of parameters, gradients and optimizer state, and the step times.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["measure_towers"]

PROCESSES = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bytes(tensors: Any) -> int:
    from torch.distributed.tensor import DTensor

    total = 0
    for t in tensors:
        if isinstance(t, Tensor):
            local = t.to_local() if isinstance(t, DTensor) else t
            total += local.numel() * local.element_size()
    return total


def _optimizer_bytes(opt: torch.optim.Optimizer) -> int:
    return _bytes(v for state in opt.state.values() for v in state.values())


def _worker(rank: int, port: int, settings: dict[str, Any], out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.nn.parallel import DistributedDataParallel

    from classicnets.models import create_model
    from classicnets.parallel.towers import TowerAlexNet, local_numel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = settings["device"] == "cuda"
    torch.set_num_threads(int(settings["threads"]))
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=PROCESSES)
    try:
        torch.manual_seed(0)
        size, batch = int(settings["image_size"]), int(settings["batch_size"])
        net = create_model("alexnet", num_classes=int(settings["num_classes"]), input_size=size)
        towers = TowerAlexNet(copy.deepcopy(net),
                              init_device_mesh(device.type, (PROCESSES,))).to(device)
        ddp = DistributedDataParallel(net.to(device), device_ids=[rank] if cuda else None)
        x = torch.randn(batch, 3, size, size, device=device)
        y = torch.randint(0, int(settings["num_classes"]), (batch,), device=device)
        share = batch // PROCESSES
        mine = slice(rank * share, (rank + 1) * share)
        dtype = torch.bfloat16 if settings["precision"] == "bf16-mixed" else None

        def stepper(model: nn.Module, inputs: Tensor, labels: Tensor) -> Any:
            opt = torch.optim.SGD(model.parameters(), lr=float(settings["lr"]), momentum=0.9,
                                  weight_decay=5e-4)

            def step() -> None:
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss = F.cross_entropy(model(inputs), labels)
                loss.backward()
                opt.step()

            return step, opt

        runners = {"towers": stepper(towers, x, y), "ddp": stepper(ddp, x[mine], y[mine])}

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize(device)

        seconds: dict[str, list[float]] = {k: [] for k in runners}
        steps = int(settings["window_steps"])
        for _ in range(int(settings["rounds"])):
            for name, (step, _) in runners.items():
                for _ in range(int(settings["warmup_steps"])):
                    step()
                sync()
                dist.barrier()  # both processes start the window together
                t0 = time.perf_counter()
                for _ in range(steps):
                    step()
                sync()
                seconds[name].append(time.perf_counter() - t0)
        mine_result = {
            name: {"seconds": seconds[name], "steps": steps,
                   "params": local_numel(model), "param_bytes": _bytes(model.parameters()),
                   "grad_bytes": _bytes(p.grad for p in model.parameters()),
                   "optimizer_bytes": _optimizer_bytes(opt)}
            for (name, (_, opt)), model in zip(runners.items(), (towers, ddp.module))
        }
        gathered: list[Any] = [None] * PROCESSES
        dist.all_gather_object(gathered, mine_result)
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


def measure_towers(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the two-process measurement; one result per process, keyed by variant.

    ``settings``: ``device`` (cpu|cuda), ``precision``, ``image_size``, ``batch_size`` (global,
    even), ``num_classes``, ``lr``, ``rounds``, ``warmup_steps``, ``window_steps``,
    ``threads`` (torch threads per process).
    """
    if int(settings["batch_size"]) % PROCESSES:
        raise ValueError(f"towers.batch_size={settings['batch_size']} must be even (DDP splits "
                         f"it over {PROCESSES} processes)")
    if settings["device"] == "cuda" and torch.cuda.device_count() < PROCESSES:
        raise ValueError(f"the towers section on cuda needs {PROCESSES} GPUs, "
                         f"{torch.cuda.device_count()} visible; run it with device=cpu")
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "towers.json"
        mp.start_processes(_worker, args=(_free_port(), dict(settings), str(out)),
                           nprocs=PROCESSES, start_method="spawn", join=True)
        return json.loads(out.read_text())
