#!/bin/sh
# What a persistent plan saves per call: perf/terse_plan_bench at 2 and 4
# ranks over TCP (plain allreduce vs the same started from a plan, 8 B to
# 4 MiB, repetitions interleaved). Writes docs/plan.txt and docs/plan.png.
#
#   sh perf/plan.sh [--plot-only]
set -eu
cd "$(dirname "$0")/.."
out=${OUT:-docs}
[ -x perf/terse_plan_bench ] || { echo "perf/plan.sh: build first (sh scripts/build.sh)"; exit 2; }
command -v gnuplot >/dev/null 2>&1 || sh scripts/install-deps.sh gnuplot-nox
[ "${1:-}" = --plot-only ] || ./perf/terse_plan_bench -r 9 2 4 | tee "$out/plan.txt"
gnuplot <<GP
set terminal pngcairo size 1100,450 font ",10"
set output "$out/plan.png"
set multiplot layout 1,2 title "terse: allreduce per call, plain vs started from a plan (TCP loopback, 2-core VM; median of 9, bars: range)"
set logscale x 2
set xtics 8,16
set format x "%.0b %BB"
set logscale y
set grid
set key top left
set xlabel "bytes"
set ylabel "microseconds per call"
set title "2 ranks"
plot "$out/plan.txt" using (\$1==2?\$2:1/0):3:4:5 with yerrorlines title "plain", \
     "" using (\$1==2?\$2:1/0):6:7:8 with yerrorlines title "plan"
set title "4 ranks"
plot "$out/plan.txt" using (\$1==4?\$2:1/0):3:4:5 with yerrorlines title "plain", \
     "" using (\$1==4?\$2:1/0):6:7:8 with yerrorlines title "plan"
unset multiplot
GP
echo "perf/plan.sh: wrote $out/plan.txt and $out/plan.png"
