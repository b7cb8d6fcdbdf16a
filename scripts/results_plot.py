#!/usr/bin/python3
"""Plot of scripts/results.sh's runs: test accuracy per epoch (mean over the
seeds) per method, and final accuracy against the bytes each rank sent, one
column per model.

    results_plot.py LOG OUT.png

LOG holds examples/fmnist_train's "RESULT key=value ..." lines.
"""
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log, out = sys.argv[1], sys.argv[2]
acc = defaultdict(list)    # (model, method, epoch) -> accuracies over seeds
final = defaultdict(list)  # (model, method) -> (bytes, acc) at the last epoch
epochs = defaultdict(int)
order = []
for line in open(log):
    if not line.startswith("RESULT"):
        continue
    f = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    model, method, ep = f["model"], f["method"], int(f["epoch"])
    if (model, method) not in order:
        order.append((model, method))
    acc[(model, method, ep)].append(100 * float(f["test_acc"]))
    epochs[model] = max(epochs[model], ep)
models = []
for model, _ in order:
    if model not in models:
        models.append(model)
for line in open(log):
    if line.startswith("RESULT"):
        f = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
        if int(f["epoch"]) == epochs[f["model"]]:
            final[(f["model"], f["method"])].append((float(f["bytes_per_rank"]) / 1e6, 100 * float(f["test_acc"])))

fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 8.5), squeeze=False)
for j, model in enumerate(models):
    ax = axes[0][j]
    for (m, method) in order:
        if m != model:
            continue
        xs = list(range(1, epochs[model] + 1))
        ys = [sum(acc[(model, method, e)]) / len(acc[(model, method, e)]) for e in xs]
        ax.plot(xs, ys, marker="o", ms=3, label=method, linestyle="--" if method == "full" else "-")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%), mean over seeds")
    ax.set_title(f"Fashion-MNIST, {model}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1][j]
    for (m, method) in order:
        if m != model:
            continue
        pts = final[(model, method)]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=method, s=18)
    ax.set_xscale("log")
    ax.set_xlabel("MB each rank sent over the run (log)")
    ax.set_ylabel("final test accuracy (%), each seed")
    ax.set_title(f"{model}: accuracy against traffic")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out, dpi=100)
