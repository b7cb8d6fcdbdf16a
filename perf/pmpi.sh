#!/bin/sh
# MPI_Allreduce of an unchanged MPI program (perf/pmpi_bench, OSU style) with
# and without libterse_pmpi preloaded - the same binary, the two runs
# interleaved, REPS times - on:
#   loopback     one host, Open MPI's defaults (shared memory); the library's
#                defaults (it leaves one-host communicators to the MPI)
#   loopback-tcp one host, Open MPI over TCP (ob1/tcp on lo) against terse's
#                TCP with TERSE_PMPI_NODE=1 (as if the ranks were on hosts)
#   cluster-G    the emulated cluster at G Gbit/s (perf/cluster_ns.sh), 4 ranks
# float32 over 4 B - 256 MiB (cluster: - 64 MiB), float64 and int32 from 1 MiB,
# the fall-through overhead (1 rank), and the error-bounded mode on the
# cluster: smooth 3-D fields (float32, float64) and the Fashion-MNIST images
# (real data), rel:1e-2 / 1e-4 / 1e-6 against the MPI and terse exact.
#
#   perf/pmpi.sh [-r REPS] [-l "1 10"] [-n 4] [-b MIN] [-e MAX] [-o docs/pmpi]
#   PARTS="overhead loopback loopback-tcp cluster eb" (default all)
#   -b/-e narrow the float32 sweep (default 4 B and 256 MiB, cluster 64 MiB);
#   RAW=FILE appends to an earlier run's raw lines (a part re-measured).
#
# Writes OUT.txt (medians, ranges, ratios), OUT.png and OUT_eb.png. Every run
# checks its results (bench column "wrong"): a wrong element fails the script.
# Needs root for the namespaces (the cluster parts are skipped otherwise).
set -eu
cd "$(dirname "$0")/.."
REPS=3; RATES="1 10"; N=4; OUT=docs/pmpi; MINB=4; MAXB=268435456; CMAXB=67108864
PARTS=${PARTS:-overhead loopback loopback-tcp cluster eb}
while getopts "r:l:n:o:b:e:" opt; do
    case $opt in
    r) REPS=$OPTARG ;; l) RATES=$OPTARG ;; n) N=$OPTARG ;; o) OUT=$OPTARG ;;
    b) MINB=$(numfmt --from=iec "$OPTARG") ;; e) MAXB=$(numfmt --from=iec "$OPTARG"); CMAXB=$MAXB ;;
    *) sed -n 16,19p "$0" >&2; exit 2 ;;
    esac
done
has_part() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
sh scripts/install-deps.sh iproute2 python3-matplotlib >&2
sh scripts/build.sh >/dev/null
W=$(mktemp -d /tmp/terse-pmpi-bench.XXXXXX)
P="tpm$$"
. perf/cluster_ns.sh
trap 'drop_ns; rm -rf "$W"' EXIT
trap 'exit 130' INT TERM
mpicc -O3 -Iinclude -o "$W/bench" perf/pmpi_bench.c -lz -lm
PRE=$PWD/lib/.libs/libterse_pmpi.so
[ -f "$PRE" ] || { echo "perf/pmpi.sh: $PRE not built (configure found no Open MPI)" >&2; exit 1; }
if [ -n "${RAW:-}" ]; then cp "$RAW" "$W/raw"; else : > "$W/raw"; fi

# record SETTING SYSTEM REP: bench lines on stdin -> raw, failing on wrong results
record() {
    awk -v s="$1" -v y="$2" -v r="$3" '!/^#/ && NF >= 7 {
        if ($5 != 0) { print s ": " y ": " $5 " wrong elements at " $2 " bytes" > "/dev/stderr"; bad = 1 }
        print s, y, $1, $2, $3, $4, $5, $6, $7, r } END { exit bad }' >> "$W/raw"
}
LOCAL="mpirun --allow-run-as-root --oversubscribe --bind-to none"
TCP="--mca pml ob1 --mca btl self,tcp --mca btl_tcp_if_include lo"

rep=1
while [ "$rep" -le "$REPS" ]; do
    if has_part overhead; then
        echo "overhead, repetition $rep/$REPS" >&2
        $LOCAL -n 1 "$W/bench" -O | awk -v r="$rep" '{ print "overhead mpi float", 0, $3, 0, 0, 0, 0, r;
                                                        print "overhead mpi unsigned", 0, $5, 0, 0, 0, 0, r }' >> "$W/raw"
        $LOCAL -n 1 -x LD_PRELOAD="$PRE" "$W/bench" -O |
            awk -v r="$rep" '{ print "overhead terse float", 0, $3, 0, 0, 0, 0, r;
                               print "overhead terse unsigned", 0, $5, 0, 0, 0, 0, r }' >> "$W/raw"
    fi
    for setting in loopback loopback-tcp; do
        has_part "$setting" || continue
        net=""; node=""
        [ "$setting" = loopback-tcp ] && net=$TCP node="-x TERSE_PMPI_NODE=1"
        for t in float double int; do
            b=$MINB; [ "$t" != float ] && b=1048576
            [ "$b" -gt "$MAXB" ] && continue
            echo "$setting $t, repetition $rep/$REPS" >&2
            $LOCAL -n "$N" $net "$W/bench" -t $t -b $b -e "$MAXB" | record "$setting" mpi "$rep"
            $LOCAL -n "$N" $net -x LD_PRELOAD="$PRE" $node "$W/bench" -t $t -b $b -e "$MAXB" |
                record "$setting" terse "$rep"
        done
    done
    rep=$((rep + 1))
done

if [ "$(id -u)" != 0 ]; then
    echo "perf/pmpi.sh: SKIP cluster and eb parts: network namespaces need root" >&2
    PARTS=$(echo "$PARTS" | sed 's/cluster//; s/eb//')
fi
mpi_in_ns
for g in $RATES; do
    has_part cluster || has_part eb || continue
    build_cluster "$N" "$g"
    rep=1
    while [ "$rep" -le "$REPS" ]; do
        if has_part cluster; then
            for t in float double int; do
                b=$MINB; [ "$t" != float ] && b=1048576
                [ "$b" -gt "$CMAXB" ] && continue
                echo "cluster-$g $t, repetition $rep/$REPS" >&2
                mpirun_cluster "$N" "$W/in_ns.sh" "$W/bench" -t $t -b $b -e "$CMAXB" | record "cluster-$g" mpi "$rep"
                mpirun_cluster "$N" -x LD_PRELOAD="$PRE" "$W/in_ns.sh" "$W/bench" -t $t -b $b -e "$CMAXB" |
                    record "cluster-$g" terse "$rep"
            done
        fi
        if has_part eb; then
            for d in smooth:float smooth:double images:float; do
                data=${d%%:*} t=${d#*:}
                echo "eb cluster-$g $data $t, repetition $rep/$REPS" >&2
                args="-t $t -d $data -b 16777216 -e 67108864"
                mpirun_cluster "$N" "$W/in_ns.sh" "$W/bench" $args | record "eb-$g-$data" mpi "$rep"
                mpirun_cluster "$N" -x LD_PRELOAD="$PRE" "$W/in_ns.sh" "$W/bench" $args |
                    record "eb-$g-$data" terse "$rep"
                for R in 1e-2 1e-4 1e-6; do
                    mpirun_cluster "$N" -x LD_PRELOAD="$PRE" -x TERSE_PMPI_COMPRESS="rel:$R" \
                        "$W/in_ns.sh" "$W/bench" $args | record "eb-$g-$data" "rel:$R" "$rep"
                done
            done
        fi
        rep=$((rep + 1))
    done
done
drop_ns
mkdir -p "$(dirname "$OUT")"
cp "$W/raw" "$OUT.raw"
/usr/bin/python3 perf/pmpi_report.py "$W/raw" "$OUT" "perf/pmpi.sh -r $REPS -l \"$RATES\" -n $N"
