#!/usr/bin/python3
"""pmpi_report.py RAW OUT COMMAND - the tables and plots of perf/pmpi.sh.

RAW lines: setting system dtype bytes time_us busbw wrong max_error ratio rep.
Per (setting, dtype, bytes) the median and range over repetitions of each
system's time, and the ratio MPI / system of the medians (> 1: faster than
the MPI's own). Writes OUT.txt, OUT.png (time and ratio against size) and,
with error-bounded runs, OUT_eb.png.
"""
import collections
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

raw, out, command = sys.argv[1], sys.argv[2], sys.argv[3]
runs = collections.defaultdict(list)  # (setting, system, dtype, bytes) -> [(time, maxerr, ratio)]
for line in open(raw):
    f = line.split()
    if len(f) < 10:
        continue
    runs[(f[0], f[1], f[2], int(f[3]))].append((float(f[4]), float(f[7]), float(f[8])))


def med(key):
    v = runs.get(key)
    return statistics.median(t for t, _, _ in v) if v else None


def rng(key):
    v = [t for t, _, _ in runs[key]]
    return min(v), max(v)


def size(b):
    for unit, s in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= s:
            return "%g %s" % (b / s, unit)
    return "%d B" % b


lines = ["# perf/pmpi.sh: MPI_Allreduce (sum) of the same binary with and without libterse_pmpi",
         "# command: " + command,
         "# median [min-max] over repetitions; ratio = MPI time / terse time (> 1: terse faster)"]
settings = sorted({k[0] for k in runs if k[0] != "overhead" and not k[0].startswith("eb-")})
for s in settings:
    for dt in ("float", "double", "int"):
        sizes = sorted({k[3] for k in runs if k[0] == s and k[2] == dt})
        if not sizes:
            continue
        lines.append("")
        lines.append("## %s, %s" % (s, dt))
        lines.append("%10s %26s %26s %7s" % ("size", "MPI us", "with terse us", "ratio"))
        for b in sizes:
            m, t = (s, "mpi", dt, b), (s, "terse", dt, b)
            if m not in runs or t not in runs:
                continue
            lines.append("%10s %10.1f [%6.1f-%6.1f] %10.1f [%6.1f-%6.1f] %7.2f" % (
                size(b), med(m), *rng(m), med(t), *rng(t), med(m) / med(t)))
ov = [k for k in runs if k[0] == "overhead"]
if ov:
    lines.append("")
    lines.append("## fall-through overhead: MPI_Allreduce of 1 element on MPI_COMM_SELF, ns per call")
    for dt in ("float", "unsigned"):
        m, t = ("overhead", "mpi", dt, 0), ("overhead", "terse", dt, 0)
        if m in runs and t in runs:
            lines.append("%-9s MPI %6.1f [%.1f-%.1f]  with the library %6.1f [%.1f-%.1f]  added %+.1f ns" % (
                dt, med(m), *rng(m), med(t), *rng(t), med(t) - med(m)))
eb = sorted({k[0] for k in runs if k[0].startswith("eb-")})
if eb:
    lines.append("")
    lines.append("## error-bounded mode (TERSE_PMPI_COMPRESS=rel:R): time, speed-up over the MPI and over terse "
                 "exact, compression ratio, largest error seen / bound")
    lines.append("%-18s %6s %8s %10s %8s %12s %10s %8s %8s" % (
        "setting", "dtype", "size", "system", "ms", "vs MPI", "vs exact", "ratio", "err"))
    for s in eb:
        for dt in ("float", "double"):
            for b in sorted({k[3] for k in runs if k[0] == s and k[2] == dt}):
                base = med((s, "mpi", dt, b))
                exact = med((s, "terse", dt, b))
                for y in ("mpi", "terse", "rel:1e-2", "rel:1e-4", "rel:1e-6"):
                    k = (s, y, dt, b)
                    if k not in runs:
                        continue
                    t = med(k)
                    err = max(e for _, e, _ in runs[k])
                    ratio = statistics.median(r for _, _, r in runs[k])
                    lines.append("%-18s %6s %8s %10s %8.1f %12.2f %10.2f %8.2f %8.3g" % (
                        s, dt, size(b), y, t / 1e3, base / t if base else 0, exact / t if exact else 0, ratio, err))
open(out + ".txt", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

# time and ratio against size, one column per setting (float32)
if settings:
    fig, ax = plt.subplots(2, len(settings), figsize=(4.5 * len(settings), 7), squeeze=False)
    for i, s in enumerate(settings):
        sizes = sorted({k[3] for k in runs if k[0] == s and k[2] == "float"})
        for y, style in (("mpi", "o-"), ("terse", "s-")):
            xs = [b for b in sizes if (s, y, "float", b) in runs]
            ax[0][i].loglog(xs, [med((s, y, "float", b)) for b in xs], style,
                            label="Open MPI" if y == "mpi" else "with libterse_pmpi")
        xs = [b for b in sizes if (s, "mpi", "float", b) in runs and (s, "terse", "float", b) in runs]
        ax[1][i].semilogx(xs, [med((s, "mpi", "float", b)) / med((s, "terse", "float", b)) for b in xs], "d-")
        ax[1][i].axhline(1.0, color="gray", lw=0.8)
        ax[1][i].axhline(1.5, color="gray", lw=0.8, ls="--")
        ax[0][i].set_title(s + " (float32 sum)")
        ax[0][i].set_ylabel("time per call (us)")
        ax[1][i].set_ylabel("MPI time / time with terse")
        ax[1][i].set_xlabel("bytes")
        ax[0][i].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=110)
if eb:
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    labels, speed, ratios = [], [], []
    for s in eb:
        for dt in ("float", "double"):
            sizes = sorted({k[3] for k in runs if k[0] == s and k[2] == dt})
            if not sizes:
                continue
            b = sizes[-1]
            base = med((s, "mpi", dt, b))
            for y in ("terse", "rel:1e-2", "rel:1e-4", "rel:1e-6"):
                if (s, y, dt, b) in runs:
                    labels.append("%s %s %s" % (s[3:], dt, "exact" if y == "terse" else y))
                    speed.append(base / med((s, y, dt, b)))
                    ratios.append(statistics.median(r for _, _, r in runs[(s, y, dt, b)]))
    ax[0].barh(labels, speed)
    ax[0].axvline(1.0, color="gray", lw=0.8)
    ax[0].set_xlabel("speed-up over Open MPI (largest size)")
    ax[1].barh(labels, ratios)
    ax[1].set_xlabel("compression ratio (input bytes / code bytes)")
    ax[1].set_yticklabels([])
    fig.tight_layout()
    fig.savefig(out + "_eb.png", dpi=110)
