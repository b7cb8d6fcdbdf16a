#!/usr/bin/python3
"""Table, bars and plot of perf/cluster.sh's measurements.

    cluster_report.py RAW CPU1 OVERLAP CORES OUT COMMAND

RAW lines: rate_gbit ranks system bytes time_us bytes_sent_per_rank (one per
repetition); CPU1 lines: codec bytes time_us (single-rank step). Writes
OUT.txt and OUT.png; exits 3 when a bar of issue 11 is not met.
"""
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

raw, cpu1_path, overlap_path = sys.argv[1], sys.argv[2], sys.argv[3]
cores, out, command = int(sys.argv[4]), sys.argv[5], sys.argv[6]
times = defaultdict(list)
sent = {}
for line in open(raw):
    g, n, s, b, t, w = line.split()
    key = (int(g), int(n), s, int(b))
    times[key].append(float(t) / 1e6)
    sent[key] = float(w)
cpu1 = {}
for line in open(cpu1_path):
    z, b, t = line.split()
    cpu1[(z, int(b))] = float(t) / 1e6

rates = sorted({k[0] for k in times})
ranks = sorted({k[1] for k in times})
sizes = sorted({k[3] for k in times})
systems = []
for k in times:
    if k[2] not in systems:
        systems.append(k[2])
codecs = [s for s in systems if s not in ("dense", "gloo", "mpi")]
label = {"dense": "terse dense", "gloo": "Gloo ring_chunked", "mpi": "Open MPI"}


def med(key):
    return statistics.median(times[key])


def bound(g, n, s, b):
    """(wire s, cpu s or None): bytes one rank sends / link rate; a codec's CPU time here."""
    wire = sent[(g, n, s, b)] / (g * 1e9 / 8)
    cpu = cpu1[(s, b)] * n / cores if (s, b) in cpu1 else None
    return wire, cpu


nrep = len(next(iter(times.values()))) if times else 0
lines = [f"# {command}", f"# {cores} cores; time: median of {nrep} repetitions [min-max];"
         " busbw as for a dense float32 allreduce; sent: bytes one rank sends per call;",
         "# bound: the larger of wire time (sent / link rate) and a codec's CPU time (its 1-rank step x ranks per core)"]
for g in rates:
    for n in ranks:
        lines.append("")
        lines.append(f"## {g} Gbit/s, {n} ranks")
        lines.append(f"{'size':>10} {'system':<18} {'time ms':>9} {'range ms':>17} {'busbw GB/s':>10} {'sent MB':>9}"
                     f" {'wire ms':>8} {'cpu ms':>8} {'/bound':>7} {'vs Gloo':>8} {'vs MPI':>7} {'vs dense':>8}")
        for b in sizes:
            for s in systems:
                k = (g, n, s, b)
                if k not in times:
                    continue
                t = med(k)
                wire, cpu = bound(g, n, s, b)
                bd = max(wire, cpu or 0)
                ratio = lambda o: f"{med((g, n, o, b)) / t:.2f}x" if (g, n, o, b) in times else "-"  # noqa: E731
                lines.append(f"{b:>10} {label.get(s, 'terse ' + s):<18} {t * 1e3:9.1f} "
                             f"{f'{min(times[k]) * 1e3:.1f}-{max(times[k]) * 1e3:.1f}':>17} "
                             f"{2 * (n - 1) / n * b / t / 1e9:10.3f} {sent[k] / 1e6:9.2f} {wire * 1e3:8.1f} "
                             f"{cpu * 1e3 if cpu is not None else float('nan'):8.1f} {t / bd:6.2f}x "
                             f"{ratio('gloo'):>8} {ratio('mpi'):>7} {ratio('dense'):>8}")

# The bars, at 128 MiB (or the largest size measured).
bars = []
big = 134217728 if 134217728 in sizes or not sizes else sizes[-1]
n4 = 4 if 4 in ranks or not ranks else ranks[-1]
if 1 in rates:
    for z in codecs:
        k = (1, n4, z, big)
        if k in times:
            wire, cpu = bound(1, n4, z, big)
            r = med(k) / max(wire, cpu or 0)
            bars.append((f"1 Gbit/s, {n4} ranks, {big >> 20} MiB: terse {z} within 1.25x of its bound "
                         f"(time {med(k) * 1e3:.0f} ms, wire {wire * 1e3:.0f} ms, cpu {(cpu or 0) * 1e3:.0f} ms): "
                         f"{r:.2f}x", r <= 1.25))
if 10 in rates:
    for z in codecs:
        k, d = (10, n4, z, big), (10, n4, "dense", big)
        if k in times and d in times:
            bars.append((f"10 Gbit/s, {n4} ranks, {big >> 20} MiB: terse {z} faster than terse dense: "
                         f"{med(d) / med(k):.2f}x", med(k) < med(d)))
    k, gl = (10, n4, "cnat8", big), (10, n4, "gloo", big)
    if k in times and gl in times:
        bars.append((f"10 Gbit/s, {n4} ranks, {big >> 20} MiB: terse cnat8 >= 2.5x faster than Gloo ring_chunked: "
                     f"{med(gl) / med(k):.2f}x", med(gl) / med(k) >= 2.5))
# Overlap lines: rate codec ranks bytes k compute progress comm_ms comp_ms total_ms ratio min max
ov = [line.split() for line in open(overlap_path)] if overlap_path and __import__("os").path.exists(overlap_path) else []
if ov:
    lines.append("")
    lines.append("## overlap: 4 compressed allreduces (cnat8) of 16 MiB started back to back, the caller computes as long "
                 "as they take alone, then waits (perf/terse_overlap); ratio = total / max(compute, comm)")
    lines.append(f"{'Gbit/s':>6} {'ranks':>5} {'compute':>7} {'progress':>8} {'comm ms':>8} {'total ms':>9} {'ratio':>6} {'range':>13}")
    for o in ov:
        lines.append(f"{o[0]:>6} {o[2]:>5} {o[5]:>7} {o[6]:>8} {float(o[7]):8.1f} {float(o[9]):9.1f} {float(o[10]):6.3f} "
                     f"{o[11] + '-' + o[12]:>13}")
        if o[0] == "1" and o[6] == "thread" and o[5] == "sleep" and o[2] == str(n4):
            bars.append((f"overlap, 1 Gbit/s, {o[2]} ranks, compute as a device would (sleep), progress thread: "
                         f"total within 1.15x of max(compute, comm): {float(o[10]):.3f}x", float(o[10]) <= 1.15))
lines.append("")
lines.append("## bars")
for text, ok in bars:
    lines.append(f"{text} - {'met' if ok else 'NOT met'}")
open(out + ".txt", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

if not times:  # the overlap part alone: no sweep to plot
    sys.exit(0 if all(ok for _, ok in bars) else 3)
fig, axes = plt.subplots(len(rates), len(ranks), figsize=(5.5 * len(ranks), 4.2 * len(rates)), squeeze=False)
for i, g in enumerate(rates):
    for j, n in enumerate(ranks):
        ax = axes[i][j]
        for s in systems:
            xs = [b for b in sizes if (g, n, s, b) in times]
            if not xs:
                continue
            ys = [med((g, n, s, b)) * 1e3 for b in xs]
            lo = [min(times[(g, n, s, b)]) * 1e3 for b in xs]
            hi = [max(times[(g, n, s, b)]) * 1e3 for b in xs]
            style = "--" if s in ("gloo", "mpi") else "-"
            ax.errorbar([b / 2**20 for b in xs], ys, yerr=[[y - a for y, a in zip(ys, lo)], [c - y for y, c in zip(ys, hi)]],
                        fmt=style, marker="o", ms=3, capsize=2, label=label.get(s, "terse " + s))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("allreduce size (MiB of float32)")
        ax.set_ylabel("time per call (ms)")
        ax.set_title(f"{n} ranks, {g} Gbit/s links (emulated)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(out + ".png", dpi=110)
sys.exit(0 if all(ok for _, ok in bars) else 3)
