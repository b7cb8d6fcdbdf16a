#!/bin/sh
# Emulated cluster: one network namespace per rank behind a bridge, every
# veth end rate-limited with tbf (../shared/docs/cluster.md has the recipe),
# and on it, side by side in one run: terse dense allreduce, terse compressed
# allreduce with several codecs, Gloo ring_chunked and Open MPI (ob1/tcp),
# float32 sum.
#
#   perf/cluster.sh [-n "2 4"] [-l "1 10"] [-b 2M] [-e 128M] [-r 3]
#                   [-z "cnat8 sign topk natdither"] [-o docs/cluster]
#
# For every (link rate, ranks, size, system) it prints the median time and
# range over -r interleaved repetitions, busbw, the bytes one rank sends per
# call and the ratio of the time to the bound: the larger of the wire time
# (bytes one rank sends / link rate) and, for a codec, its CPU time here (its
# single-rank step time x ranks per core). Writes OUT.txt (the table) and
# OUT.png (time against size per system, one panel per rate and rank count).
# Then the overlap run (perf/terse_overlap: 4 cnat8 allreduces of 16 MiB while
# the caller computes as long as they take alone, with and without the
# progress thread) and its bar, total within 1.15x of max(compute, comm).
# Every system checks its results: a wrong element (or, compressed, replicas
# that differ) fails the script. Needs root (namespaces); exits 77 otherwise.
# PARTS="sweep overlap" (default both) runs only some of it.
set -eu
cd "$(dirname "$0")/.."
RANKS="2 4"; RATES="1 10"; MINB=2097152; MAXB=134217728; REPS=3; OUT=docs/cluster
CODECS="cnat8 sign topk natdither"
PARTS=${PARTS:-sweep overlap}
has_part() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
size_arg() { numfmt --from=iec "$1"; }
while getopts "n:l:b:e:r:z:o:" opt; do
    case $opt in
    n) RANKS=$OPTARG ;; l) RATES=$OPTARG ;; b) MINB=$(size_arg "$OPTARG") ;; e) MAXB=$(size_arg "$OPTARG") ;;
    r) REPS=$OPTARG ;; z) CODECS=$OPTARG ;; o) OUT=$OPTARG ;;
    *) sed -n 9,10p "$0" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" != 0 ]; then
    echo "perf/cluster.sh: SKIP: network namespaces need root" >&2
    exit 77
fi
sh scripts/install-deps.sh libgloo-dev g++ iproute2 python3-matplotlib >&2
sh scripts/build.sh >/dev/null
W=$(mktemp -d /tmp/terse-cluster.XXXXXX)
P="tcl$$"
CORES=$(nproc)
. perf/cluster_ns.sh
trap 'drop_ns; rm -rf "$W"' EXIT
trap 'exit 130' INT TERM
mpicc -O3 -o "$W/mpi_bench" perf/peers/mpi_allreduce_bench.c
g++ -O3 -o "$W/gloo_bench" perf/peers/gloo_allreduce_bench.cc -lgloo -lpthread

# Each runner prints "bytes time_us bytes_sent_per_rank" lines for rank 0
# and fails on wrong results.
PORT=29400
run_terse() { # n rate codec|dense
    PORT=$((PORT + 1))
    z=""; [ "$3" != dense ] && z="-z $3"
    r=1
    while [ "$r" -lt "$1" ]; do
        ip netns exec "$P-r$r" env TERSE_RANK=$r TERSE_SIZE="$1" TERSE_ROOT_ADDR=10.200.0.1:$PORT \
            TERSE_SECRET="cluster$$" TERSE_TRANSPORT=tcp TERSE_LINK_GBPS="$2" \
            ./perf/terse_perf -b "$MINB" -e "$MAXB" -f 4 -w 2 -i 0 $z >/dev/null &
        r=$((r + 1))
    done
    ip netns exec "$P-r0" env TERSE_RANK=0 TERSE_SIZE="$1" TERSE_ROOT_ADDR=10.200.0.1:$PORT \
        TERSE_SECRET="cluster$$" TERSE_TRANSPORT=tcp TERSE_LINK_GBPS="$2" \
        ./perf/terse_perf -b "$MINB" -e "$MAXB" -f 4 -w 2 -i 0 $z |
        awk -v n="$1" -v what="terse $3" '!/^#/ {
            if ($8 != 0) { print what ": wrong results (or replicas differ)" > "/dev/stderr"; exit 1 }
            sent = NF >= 9 ? $9 : 2 * (n - 1) / n * $1
            print $1, $5, sent }'
    wait
}
run_gloo() { # n
    store="$W/store.$(date +%s%N)"; mkdir -p "$store"
    r=1
    while [ "$r" -lt "$1" ]; do
        ip netns exec "$P-r$r" env GLOO_ADDR="10.200.0.$((r + 1))" \
            "$W/gloo_bench" "$r" "$1" "$store" ring_chunked "$MINB" "$MAXB" 4 >/dev/null &
        r=$((r + 1))
    done
    ip netns exec "$P-r0" env GLOO_ADDR=10.200.0.1 "$W/gloo_bench" 0 "$1" "$store" ring_chunked "$MINB" "$MAXB" 4 |
        awk -v n="$1" '{ if ($4 != 0) { print "gloo: wrong results" > "/dev/stderr"; exit 1 }
                         print $1, $3, 2 * (n - 1) / n * $1 }'
    wait
}
mpi_in_ns
run_mpi() { # n
    mpirun_cluster "$1" \
        "$W/in_ns.sh" "$W/mpi_bench" "$MINB" "$MAXB" 4 2>"$W/mpi.err" |
        awk -v n="$1" '{ if ($4 != 0) { print "mpi: wrong results" > "/dev/stderr"; exit 1 }
                         print $1, $3, 2 * (n - 1) / n * $1 }' || { cat "$W/mpi.err" >&2; return 1; }
}

# A codec's CPU time here: its single-rank step (encode, decode, feedback).
: > "$W/raw"; : > "$W/cpu1"; : > "$W/overlap"
has_part sweep && for z in $CODECS; do
    ./perf/terse_perf -n 1 -b "$MINB" -e "$MAXB" -f 4 -w 2 -i 0 -z "$z" |
        awk -v z="$z" '!/^#/ { print z, $1, $5 }' >> "$W/cpu1"
done

SYSTEMS="dense $CODECS gloo mpi"
has_part sweep && for g in $RATES; do
    for n in $RANKS; do
        build_cluster "$n" "$g"
        rep=1
        while [ "$rep" -le "$REPS" ]; do
            for s in $SYSTEMS; do
                echo "$g Gbit/s, n=$n, repetition $rep/$REPS: $s" >&2
                case $s in
                gloo) run_gloo "$n" ;;
                mpi) run_mpi "$n" ;;
                *) run_terse "$n" "$g" "$s" ;;
                esac | awk -v g="$g" -v n="$n" -v s="$s" '{ print g, n, s, $0 }' >> "$W/raw"
            done
            rep=$((rep + 1))
        done
    done
done
# Overlap: 4 compressed allreduces of 16 MiB while the caller computes as long.
has_part overlap && for g in $RATES; do
    for n in $RANKS; do
        build_cluster "$n" "$g"
        for mode in sleep spin; do
            echo "$g Gbit/s, n=$n: overlap ($mode)" >&2
            PORT=$((PORT + 1))
            r=1
            while [ "$r" -lt "$n" ]; do
                ip netns exec "$P-r$r" env TERSE_RANK=$r TERSE_SIZE="$n" TERSE_ROOT_ADDR=10.200.0.1:$PORT \
                    TERSE_SECRET="cluster$$" TERSE_TRANSPORT=tcp TERSE_LINK_GBPS="$g" \
                    ./perf/terse_overlap -s 16777216 -k 4 -z cnat8 -r "$((REPS + 2))" -c "$mode" >/dev/null &
                r=$((r + 1))
            done
            ip netns exec "$P-r0" env TERSE_RANK=0 TERSE_SIZE="$n" TERSE_ROOT_ADDR=10.200.0.1:$PORT \
                TERSE_SECRET="cluster$$" TERSE_TRANSPORT=tcp TERSE_LINK_GBPS="$g" \
                ./perf/terse_overlap -s 16777216 -k 4 -z cnat8 -r "$((REPS + 2))" -c "$mode" |
                awk -v g="$g" '!/^#/ { print g, $0 }' >> "$W/overlap"
            wait
        done
    done
done
drop_ns

/usr/bin/python3 perf/cluster_report.py "$W/raw" "$W/cpu1" "$W/overlap" "$CORES" "$OUT" \
    "perf/cluster.sh -n \"$RANKS\" -l \"$RATES\" -b $MINB -e $MAXB -r $REPS -z \"$CODECS\""
