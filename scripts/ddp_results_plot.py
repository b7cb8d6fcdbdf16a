#!/usr/bin/python3
"""Table and plot of scripts/ddp_results.sh's runs.

    ddp_results_plot.py RESULTS.jsonl TARGET OUT.png

Per network and hook: the median step time (median over repetitions of the
per-run medians, with the range), the final test accuracy, the training wall
time to the first evaluation at or above TARGET, and ratios to Gloo's plain
allreduce (> 1: faster than Gloo). Plot: accuracy against training wall
time (first repetition) and step time per hook, one column per network.
"""
import json
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

path, target, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
runs = defaultdict(list)  # (net, hook, rep) -> records in order
order, nets = [], []
for line in open(path):
    r = json.loads(line)
    key = (r["net"], r["hook"], r["rep"])
    runs[key].append(r)
    if r["hook"] not in order:
        order.append(r["hook"])
    if r["net"] not in nets:
        nets.append(r["net"])

NAMES = {"gloo": "Gloo allreduce", "fp16": "fp16_compress_hook", "psgd1": "PowerSGD r1",
         "psgd2": "PowerSGD r2", "terse-pg": "terse backend", "cnat": "terse C_nat",
         "sign-sa-ea": "terse sign+SA+EA", "topk": "terse top-k 1% +EF", "sasg": "terse SASG"}


def label(net):
    return "loopback" if net == "lo" else "emulated %s Gbit/s" % net


def summary(net, hook):
    reps = [v for (n, h, _), v in sorted(runs.items()) if n == net and h == hook]
    step = [statistics.median(r["step_ms"] for r in v) for v in reps]
    final = [v[-1]["acc"] for v in reps]
    ttt = []
    for v in reps:
        hit = [r["wall"] for r in v if r["acc"] >= target]
        ttt.append(hit[0] if hit else None)
    same = all(r.get("replicas_identical", False) for v in reps for r in v)
    return step, final, ttt, same


def rng(xs, fmt):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    m = statistics.median(xs)
    return fmt % m if len(xs) == 1 else (fmt + " [" + fmt + "-" + fmt + "]") % (m, min(xs), max(xs))


print("DDP on Fashion-MNIST, 4 ranks: step time, final test accuracy and training time to "
      "%.1f %% test accuracy" % (100 * target))
for net in nets:
    print("\n%s" % label(net))
    print("%-20s %-22s %-20s %-20s %8s %8s %s" % ("hook", "step ms", "final acc %", "time to target s",
                                                  "step x", "target x", "replicas"))
    base = summary(net, "gloo") if "gloo" in order else None
    for hook in order:
        step, final, ttt, same = summary(net, hook)
        if not step:
            continue
        sx = tx = "-"
        if base and base[0]:
            sx = "%.2f" % (statistics.median(base[0]) / statistics.median(step))
            bt = [t for t in base[2] if t is not None]
            mt = [t for t in ttt if t is not None]
            if bt and mt and len(mt) == len(ttt):
                tx = "%.2f" % (statistics.median(bt) / statistics.median(mt))
        print("%-20s %-22s %-20s %-20s %8s %8s %s" % (
            NAMES.get(hook, hook), rng(step, "%.0f"), rng([100 * f for f in final], "%.2f"),
            rng(ttt, "%.1f") if all(t is not None for t in ttt) else rng(ttt, "%.1f") + " (not all)",
            sx, tx, "identical" if same else "DIFFER"))

fig, axes = plt.subplots(2, len(nets), figsize=(6.5 * len(nets), 8.5), squeeze=False)
for c, net in enumerate(nets):
    ax = axes[0][c]
    for hook in order:
        v = runs.get((net, hook, 0))
        if v:
            ax.plot([r["wall"] for r in v], [100 * r["acc"] for r in v], marker=".",
                    label=NAMES.get(hook, hook), ls="--" if not hook.startswith(("cnat", "sign", "topk", "sasg", "terse")) else "-")
    ax.axhline(100 * target, color="grey", lw=0.8, ls=":")
    ax.set_title("%s: test accuracy" % label(net))
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(80, 92)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[1][c]
    hs = [h for h in order if summary(net, h)[0]]
    med = [statistics.median(summary(net, h)[0]) for h in hs]
    ax.bar(range(len(hs)), med, color=["C%d" % i for i in range(len(hs))])
    ax.set_xticks(range(len(hs)))
    ax.set_xticklabels([NAMES.get(h, h) for h in hs], rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("median step time (ms)")
    ax.set_title("%s: time per step" % label(net))
    ax.grid(axis="y", alpha=0.3)
fig.tight_layout()
fig.savefig(out, dpi=110)
