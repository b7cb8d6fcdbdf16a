#!/bin/sh
# What a communicator costs as the job grows (issue "resources that scale"):
# create time, connections, pinned and resident memory per rank, first and
# later allreduce times (8 B, 1 MiB) for 8-256 ranks over TCP on this
# machine and - with --verbs - 2-8 ranks over verbs in the soft-RoCE guest.
# Writes docs/scale_tcp.txt (docs/scale_verbs.txt) and the plot docs/scale.png.
#
#   sh perf/scale.sh [--verbs]        (after a build: sh scripts/build.sh)
#   sh perf/scale.sh --plot-only      (redraw from the tables)
set -eu
cd "$(dirname "$0")/.."
out=${OUT:-docs}
[ -x perf/terse_scale ] || { echo "perf/scale.sh: build first (sh scripts/build.sh)"; exit 2; }
command -v gnuplot >/dev/null 2>&1 || sh scripts/install-deps.sh gnuplot-nox
[ "${1:-}" = --plot-only ] || ./perf/terse_scale -r 10 8 32 64 128 256 | tee "$out/scale_tcp.txt"
if [ "${1:-}" = --verbs ]; then
    sh tests/softroce/run.sh ./perf/terse_scale -t verbs -r 10 2 4 8 | grep -E '^ *#|^ *[0-9]' | tee "$out/scale_verbs.txt"
fi
verbs_plot=""
[ -s "$out/scale_verbs.txt" ] && verbs_plot=1
gnuplot <<GP
set terminal pngcairo size 1200,900 font ",10"
set output "$out/scale.png"
set multiplot layout 2,2 title "terse: cost per rank against the rank count (worst rank; TCP on a 2-core VM$( [ -n "$verbs_plot" ] && echo ', verbs on soft-RoCE' ))"
set logscale x 2
set key top left
set grid
set xlabel "ranks"
set title "connections per rank"
set ylabel "connections"
plot "$out/scale_tcp.txt" using 1:3 with linespoints title "tcp, most", \
     "" using 1:4 with linespoints title "tcp, mean", \
     "" using 1:(2*(\$1-1)) with lines dashtype 2 title "full mesh, both directions (2(n-1))"$( [ -n "$verbs_plot" ] && echo ', \
     "'"$out"'/scale_verbs.txt" using 1:3 with linespoints title "verbs (on first use, soft-RoCE guest)"' )
set title "memory per rank"
set ylabel "MiB"
set logscale y
plot "$out/scale_tcp.txt" using 1:6 with linespoints title "tcp, resident"$( [ -n "$verbs_plot" ] && echo ', \
     "'"$out"'/scale_verbs.txt" using 1:5 with linespoints title "verbs, pinned", \
     "" using 1:6 with linespoints title "verbs, resident"' )
unset logscale y
set title "communicator creation"
set ylabel "seconds"
plot "$out/scale_tcp.txt" using 1:2 with linespoints title "tcp"$( [ -n "$verbs_plot" ] && echo ', \
     "'"$out"'/scale_verbs.txt" using 1:2 with linespoints title "verbs"' )
set title "allreduce time (ranks share 2 cores)"
set ylabel "microseconds"
set logscale y
plot "$out/scale_tcp.txt" using 1:7 with linespoints title "8 B, first", \
     "" using 1:8 with linespoints title "8 B, later (median)", \
     "" using 1:9 with linespoints title "1 MiB, first", \
     "" using 1:10 with linespoints title "1 MiB, later (median)"
unset multiplot
GP
echo "perf/scale.sh: wrote $out/scale_tcp.txt${verbs_plot:+ $out/scale_verbs.txt} and $out/scale.png"
