#!/usr/bin/python3
"""DDP on Fashion-MNIST with one communication hook, one process per rank
(launched by scripts/ddp_results.sh, or python/tests/launch.py -n 4):

    ddp_fmnist.py --hook HOOK [--epochs 1] [--batch 16] [--lr 0.05] [--out results.jsonl]

HOOK: gloo (DDP's allreduce over Gloo), fp16 (fp16_compress_hook), psgd1 /
psgd2 (PowerSGD rank 1 / 2 with its error feedback), terse-pg (DDP's
allreduce over the "terse" backend), cnat (terse C_nat), sign-sa-ea (terse
scaled sign + error feedback + step-ahead + error averaging), topk (terse
top-k 1 % + error feedback), sasg (terse SASG). Every hook but terse-pg runs
on the same Gloo process group, so only the gradient exchange differs.

Rank 0 evaluates the test set every quarter epoch (that time is not counted)
and appends one JSON line per evaluation: hook, wall time of training so far,
epoch, test accuracy, median step time. Every rank checks at the end that the
replicas are bit-identical (exit status 3 if not).
"""
import argparse
import gzip
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import terse.torch as tt  # noqa: E402 - after the path (also registers the backend)

DATA = "/usr/share/datasets/fashion-mnist"


def load(kind):
    with gzip.open(os.path.join(DATA, "%s-images-idx3-ubyte.gz" % kind)) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(os.path.join(DATA, "%s-labels-idx1-ubyte.gz" % kind)) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    x = (torch.from_numpy(x.astype(np.float32)) / 255.0 - 0.2860) / 0.3530
    return x, torch.from_numpy(y.astype(np.int64))


class Net(torch.nn.Module):
    """Two conv layers and a wide classifier: 1.07 M parameters (4.3 MB of
    gradient per step), sized so that 4 ranks on 2 cores are
    communication-bound at 1 Gbit/s."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 16, 5)
        self.c2 = torch.nn.Conv2d(16, 32, 5)
        self.f1 = torch.nn.Linear(32 * 4 * 4, 2048)
        self.f2 = torch.nn.Linear(2048, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.f2(F.relu(self.f1(x.flatten(1))))


def make_hook(name, ddp, pg, lr):
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
    if name in ("gloo", "terse-pg"):
        return None
    if name == "fp16":
        ddp.register_comm_hook(pg, default_hooks.fp16_compress_hook)
        return None
    if name in ("psgd1", "psgd2"):
        st = powerSGD_hook.PowerSGDState(process_group=pg, matrix_approximation_rank=int(name[-1]),
                                         start_powerSGD_iter=10, use_error_feedback=True,
                                         warm_start=True)
        ddp.register_comm_hook(st, powerSGD_hook.powerSGD_hook)
        return None
    if name == "cnat":
        st = tt.hooks.cnat_state()
    elif name == "sign-sa-ea":
        st = tt.hooks.sign_ef_state(error_average_every=50)
    elif name == "topk":
        st = tt.hooks.topk_ef_state(ratio=0.01)
    elif name == "sasg":
        st = tt.hooks.SASGState(ratio=0.05, D=10, lr=lr)
        ddp.register_comm_hook(st, tt.hooks.sasg_hook)
        return st
    else:
        raise SystemExit("ddp_fmnist: unknown hook %r" % name)
    ddp.register_comm_hook(st, tt.hooks.compressed_hook)
    return st


def evaluate(model, x, y):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            correct += (model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item()
    model.train()
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hook", required=True)
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--batch", type=int, default=16, help="per rank")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--net", default="loopback", help="label written with the results")
    ap.add_argument("--rep", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("terse" if a.hook == "terse-pg" else "gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    xtr, ytr = load("train")
    xte, yte = load("t10k")
    torch.manual_seed(0)
    model = Net()
    # One bucket for every hook: torch 1.13's PowerSGD hook waits for a nested
    # allreduce inside a future callback, which blocks a Gloo worker thread
    # per bucket - with DDP's usual two buckets (a 1 MB first one) both of
    # Gloo's threads block and training deadlocks.
    dist._DEFAULT_FIRST_BUCKET_BYTES = 32 << 20
    ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=32)
    state = make_hook(a.hook, ddp, None, a.lr)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
    step_ahead = tt.StepAhead(state, opt) if a.hook == "sign-sa-ea" else None
    per_rank = len(xtr) // size
    steps_per_epoch = per_rank // a.batch
    total = int(a.epochs * steps_per_epoch)
    eval_every = max(1, steps_per_epoch // 4)
    g = torch.Generator().manual_seed(12345)
    wall, times, out = 0.0, [], []
    perm = None
    for step in range(total):
        if step % steps_per_epoch == 0:  # the same shuffle on every rank; each takes its shard
            perm = torch.randperm(len(xtr), generator=g)[rank * per_rank:(rank + 1) * per_rank]
        i = perm[(step % steps_per_epoch) * a.batch:(step % steps_per_epoch + 1) * a.batch]
        t0 = time.perf_counter()
        if step_ahead is not None:
            with step_ahead:
                F.cross_entropy(ddp(xtr[i]), ytr[i]).backward()
        else:
            F.cross_entropy(ddp(xtr[i]), ytr[i]).backward()
        opt.step()
        opt.zero_grad()
        dt = time.perf_counter() - t0
        wall += dt
        times.append(dt)
        if (step + 1) % eval_every == 0 or step + 1 == total:
            dist.barrier()
            if rank == 0:
                acc = evaluate(model, xte, yte)
                rec = {"hook": a.hook, "net": a.net, "rep": a.rep, "step": step + 1,
                       "epoch": (step + 1) / steps_per_epoch, "wall": wall, "acc": acc,
                       "step_ms": 1e3 * statistics.median(times[-eval_every:]), "ranks": size}
                out.append(rec)
                print(json.dumps(rec), flush=True)
            dist.barrier()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    allp = [torch.empty_like(flat) for _ in range(size)]
    dist.all_gather(allp, flat)
    same = all(torch.equal(allp[0], p) for p in allp)
    if rank == 0:
        if state is not None and hasattr(state, "stats"):
            st = state.stats()
            print("hook stats:", json.dumps({str(k): {kk: vv for kk, vv in v.items()
                                                      if isinstance(vv, (int, float, str))}
                                             for k, v in st.items()}), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                for rec in out:
                    rec["replicas_identical"] = same
                    f.write(json.dumps(rec) + "\n")
    dist.barrier()
    dist.destroy_process_group()
    if not same:
        print("ddp_fmnist: replicas differ on rank %d" % rank, file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
