"""DDP over an nccl process group on CUDA: medvlm's small3d, wrapped by ``medvlm.cnn.distributed``.

    torchrun --standalone --nproc-per-node N benchmarks/gpu_ddp_step.py --out ddp.json

Each rank joins the group through :func:`medvlm.cnn.distributed.process_group` (``nccl`` on CUDA), wraps
the network with :func:`wrap_model` (DistributedDataParallel when the world has several ranks), runs
``--steps`` bf16-autocast steps on random volumes of its own seed, then checks what DDP promises: after
the steps every rank holds the same parameters (max abs difference over ranks, all-reduced), and the
summed losses agree with :func:`all_reduce_sums`. With one rank the group is still nccl (the collective
calls run) but DDP is not engaged; rank 0 writes the JSON. Without CUDA the group is gloo.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("ddp.json"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args(argv)

    import os
    import socket

    if "WORLD_SIZE" not in os.environ:  # one process outside torchrun: a group of one all the same
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1",
                          LOCAL_RANK="0")

    import torch
    import torch.distributed as dist

    from medvlm.cnn.distributed import all_reduce_sums, distributed_env, process_group, wrap_model
    from medvlm.cnn.models import build_model

    rank, world, local = distributed_env()
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local % torch.cuda.device_count()}" if cuda else "cpu")
    shape = (4, 48, 64, 64)
    with process_group(device, local % max(torch.cuda.device_count(), 1)):
        torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        model = build_model("small3d", shape).to(device)
        net = wrap_model(model, device, world)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data
        losses, times = [], []
        for _ in range(args.steps):
            x = torch.randn(args.batch, *shape, generator=gen).to(device)
            y = torch.randint(0, 2, (args.batch,), generator=gen).to(device)
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                out = net(x)
                logits = out.float().reshape(-1)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            losses.append(float(loss.detach()))
        flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
        ref = flat.clone()
        dist.broadcast(ref, src=0)
        spread = (flat - ref).abs().max()
        dist.all_reduce(spread, op=dist.ReduceOp.MAX)
        sums = all_reduce_sums([sum(losses)], device)
        total = torch.tensor([sum(losses)], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        result = {"backend": dist.get_backend(), "world_size": dist.get_world_size(), "ranks_env": world,
                  "ddp": type(net).__name__, "device": torch.cuda.get_device_name(device) if cuda else "cpu",
                  "steps": args.steps, "batch_per_rank": args.batch, "input": list(shape),
                  "step_s_median": round(sorted(times)[len(times) // 2], 4),
                  "first_step_s": round(times[0], 4),
                  "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4),
                  "param_max_abs_diff_over_ranks": float(spread),
                  "loss_sum_helper": sums[0], "loss_sum_allreduce": float(total[0]),
                  "peak_memory_gib": (round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
                                      if cuda else None)}
        if rank == 0:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"gpu_ddp_step: {result}", flush=True)
        ok = float(spread) == 0.0
        dist.barrier()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
