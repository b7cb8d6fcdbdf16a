#!/bin/sh
# Peer comparison: terse allreduce (dense, and compressed with C_nat, 1 byte
# per value) vs Open MPI MPI_Allreduce (ob1, btl tcp on loopback) vs Gloo
# (ring-chunked and halving-doubling, TCP transport), all float32 sum, in one
# run, printed as busbw (GB/s) and ratios per size. The compressed column's
# busbw is dense-equivalent (the float32 size over the time, as for the
# others): it is how fast the same allreduce completes, at C_nat precision.
#
#   perf/compare.sh [-n "2 4"] [-b 4096] [-e 268435456] [-r 3] [-o out.md]
#
# With -o, also out.png: busbw against size per library, one panel per rank
# count (gnuplot).
#
# Each (library, rank count) sweep runs -r times, interleaved, and the median
# busbw per size is reported. Every library checks its results (a wrong
# element makes the script fail). Installs what it needs (Debian packages).
set -eu
cd "$(dirname "$0")/.."
RANKS="2 4"; MINB=4096; MAXB=268435456; REPS=3; OUT=""
while getopts "n:b:e:r:o:" opt; do
    case $opt in
    n) RANKS=$OPTARG ;; b) MINB=$OPTARG ;; e) MAXB=$OPTARG ;; r) REPS=$OPTARG ;; o) OUT=$OPTARG ;;
    *) echo "usage: $0 [-n ranks] [-b min] [-e max] [-r reps] [-o out.md]" >&2; exit 2 ;;
    esac
done
sh scripts/install-deps.sh libgloo-dev g++ gnuplot-nox
sh scripts/build.sh >/dev/null
W=$(mktemp -d /tmp/terse-compare.XXXXXX)
trap 'rm -rf "$W"' EXIT
mpicc -O3 -o "$W/mpi_bench" perf/peers/mpi_allreduce_bench.c
g++ -O3 -o "$W/gloo_bench" perf/peers/gloo_allreduce_bench.cc -lgloo -lpthread
MPIRUN="mpirun --allow-run-as-root --oversubscribe --bind-to none --mca pml ob1 --mca btl self,tcp --mca btl_tcp_if_include lo"

# Each runner prints "bytes busbw" lines and fails on wrong results.
run_terse() { # n
    ./perf/terse_perf -n "$1" -b "$MINB" -e "$MAXB" -f 4 -w 2 -i 0 -c 1 |
        awk '!/^#/ { if ($8 != 0) { print "terse: wrong results" > "/dev/stderr"; exit 1 } print $1, $7 }'
}
run_terse_cnat() { # n: #wrong here counts ranks whose output bits differ
    ./perf/terse_perf -n "$1" -b "$MINB" -e "$MAXB" -f 4 -w 2 -i 0 -z cnat8 -E 0 |
        awk '!/^#/ { if ($8 != 0) { print "terse cnat8: replicas differ" > "/dev/stderr"; exit 1 } print $1, $7 }'
}
run_mpi() { # n
    $MPIRUN -n "$1" "$W/mpi_bench" "$MINB" "$MAXB" 4 2>/dev/null |
        awk '{ if ($4 != 0) { print "mpi: wrong results" > "/dev/stderr"; exit 1 } print $1, $2 }'
}
run_gloo() { # n algo
    store="$W/store.$2.$$.$(date +%s%N)"; mkdir -p "$store"
    r=1; while [ "$r" -lt "$1" ]; do "$W/gloo_bench" "$r" "$1" "$store" "$2" "$MINB" "$MAXB" 4 >/dev/null & r=$((r + 1)); done
    "$W/gloo_bench" 0 "$1" "$store" "$2" "$MINB" "$MAXB" 4 |
        awk '{ if ($4 != 0) { print "gloo: wrong results" > "/dev/stderr"; exit 1 } print $1, $2 }'
    wait
}

for n in $RANKS; do
    rep=1
    while [ "$rep" -le "$REPS" ]; do
        echo "n=$n repetition $rep/$REPS: terse, terse C_nat, Open MPI, Gloo ring-chunked, Gloo halving-doubling" >&2
        run_terse "$n" > "$W/terse.$n.$rep"
        run_terse_cnat "$n" > "$W/cnat.$n.$rep"
        run_mpi "$n" > "$W/mpi.$n.$rep"
        run_gloo "$n" ring_chunked > "$W/gring.$n.$rep"
        run_gloo "$n" halving_doubling > "$W/ghd.$n.$rep"
        rep=$((rep + 1))
    done
done

median() { # files... -> "bytes median_busbw" per size
    cat "$@" | sort -k1,1n -k2,2g | awk '
        { v[$1] = v[$1] " " $2; c[$1]++ }
        END { for (b in v) { split(v[b], a, " "); m = int((c[b] + 1) / 2); print b, a[m] } }' | sort -n
}

{
    echo "| ranks | size | terse | terse C_nat | Open MPI | Gloo ring | Gloo HD | terse/MPI | C_nat/MPI | terse/best Gloo |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for n in $RANKS; do
        median "$W"/terse.$n.* > "$W/t"; median "$W"/cnat.$n.* > "$W/z"; median "$W"/mpi.$n.* > "$W/m"
        median "$W"/gring.$n.* > "$W/g1"; median "$W"/ghd.$n.* > "$W/g2"
        join "$W/t" "$W/z" | join - "$W/m" | join - "$W/g1" | join - "$W/g2" | tee "$W/plot.$n" | awk -v n="$n" '
            function hs(b) { return b >= 1048576 ? b / 1048576 " MiB" : b / 1024 " KiB" }
            { g = $5 > $6 ? $5 : $6
              printf "| %d | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", n, hs($1), $2, $3, $4, $5, $6, $2 / $4, $3 / $4, $2 / g }'
    done
} > "$W/table"
cat "$W/table"
if [ -n "$OUT" ]; then
    cp "$W/table" "$OUT"
    png="${OUT%.*}.png"
    np=$(echo $RANKS | wc -w)
    {
        echo "set terminal pngcairo size $((550 * np)),450 font \",10\""
        echo "set output \"$png\""
        echo "set termoption noenhanced"
        echo "set multiplot layout 1,$np title \"allreduce float32 sum, TCP loopback (median of $REPS)\""
        echo "set logscale x 2; set format x \"%.0b %BB\"; set grid; set key top left"
        echo "set xlabel \"bytes\"; set ylabel \"busbw GB/s\""
        for n in $RANKS; do
            f="$W/plot.$n"
            echo "set title \"$n ranks\""
            echo "plot \"$f\" using 1:2 with linespoints title \"terse\", \"$f\" using 1:3 with linespoints title \"terse C_nat\", \"$f\" using 1:4 with linespoints title \"Open MPI\", \"$f\" using 1:5 with linespoints title \"Gloo ring\", \"$f\" using 1:6 with linespoints title \"Gloo HD\""
        done
        echo "unset multiplot"
    } | gnuplot
    echo "perf/compare.sh: wrote $OUT and $png" >&2
fi
