#!/bin/sh
# DDP on Fashion-MNIST, 4 ranks, every communication hook side by side in one
# run (python/examples/ddp_fmnist.py): Gloo's allreduce, fp16_compress_hook,
# PowerSGD rank 1 and 2, DDP over the "terse" backend, and terse's hooks
# (C_nat, sign + EF + step-ahead + error averaging, top-k + EF, SASG), on the
# emulated 1 Gbit/s cluster (network namespaces, perf/cluster_ns.sh) and on
# the loopback. Repetitions are interleaved (rep, then network, then hook).
#
#   scripts/ddp_results.sh [-l "1 lo"] [-k "HOOKS"] [-K "LOOPBACK HOOKS"] [-e EPOCHS] [-b BATCH]
#                          [-r REPS] [-t TARGET] [-o docs/ddp] [-a]
#
# Writes OUT.jsonl (every evaluation), OUT.txt (the table: median step time,
# final accuracy, time to the target accuracy, ratios to Gloo) and OUT.png.
# -a: keep OUT.jsonl's other runs and replace only those of the hooks and
# networks run now (a hook re-measured after a change).
# The namespaces need root (the loopback alone does not).
set -eu
cd "$(dirname "$0")/.."
NETS="1 lo"; HOOKS="gloo fp16 psgd1 psgd2 terse-pg cnat sign-sa-ea topk sasg"
EPOCHS=1; BATCH=16; REPS=1; TARGET=0.85; OUT=docs/ddp; N=4; LOHOOKS=""; APPEND=0
while getopts "l:k:K:e:b:r:t:o:a" opt; do
    case $opt in
    l) NETS=$OPTARG ;; k) HOOKS=$OPTARG ;; K) LOHOOKS=$OPTARG ;; e) EPOCHS=$OPTARG ;; b) BATCH=$OPTARG ;; r) REPS=$OPTARG ;;
    t) TARGET=$OPTARG ;; o) OUT=$OPTARG ;; a) APPEND=1 ;;
    *) sed -n 9,10p "$0" >&2; exit 2 ;;
    esac
done
sh scripts/install-deps.sh iproute2 >&2
sh scripts/build.sh >/dev/null
export TERSE_LIBRARY="$PWD/lib/.libs/libterse.so.1"
W=$(mktemp -d /tmp/terse-ddp.XXXXXX)
P="tdd$$"
. perf/cluster_ns.sh
trap 'drop_ns; rm -rf "$W"' EXIT
trap 'exit 130' INT TERM
if [ "$APPEND" = 1 ] && [ -f "$OUT.jsonl" ]; then
    # drop the runs about to be made again (hook on a network of this run)
    NETS="$NETS" HOOKS="$HOOKS" LOHOOKS="$LOHOOKS" /usr/bin/python3 -c '
import json, os, sys
nets, hooks = os.environ["NETS"].split(), os.environ["HOOKS"].split()
lo = os.environ["LOHOOKS"].split() or hooks
again = {(n, h) for n in nets for h in (lo if n == "lo" else hooks)}
keep = [l for l in open(sys.argv[1]) if (json.loads(l)["net"], json.loads(l)["hook"]) not in again]
open(sys.argv[1], "w").writelines(keep)' "$OUT.jsonl"
else
    : > "$OUT.jsonl"
fi
PORT=29600

run() { # net hook rep
    PORT=$((PORT + 1))
    args="python/examples/ddp_fmnist.py --hook $2 --epochs $EPOCHS --batch $BATCH --net $1 --rep $3 --out $OUT.jsonl"
    r=0
    while [ "$r" -lt "$N" ]; do
        if [ "$1" = lo ]; then
            pre="env" addr=127.0.0.1 dev=lo host=""
        else
            pre="ip netns exec $P-r$r env" addr=10.200.0.1 dev=pe0
            host="TERSE_BIND_ADDR=10.200.0.$((r + 1)) TERSE_HOST_ID=emulated-node-$r TERSE_LINK_GBPS=$1"
        fi
        # shellcheck disable=SC2086 # word splitting wanted
        $pre RANK=$r WORLD_SIZE=$N MASTER_ADDR=$addr MASTER_PORT=$PORT GLOO_SOCKET_IFNAME=$dev \
            TERSE_SECRET="ddp$$" $host timeout 1200 /usr/bin/python3 $args > "$W/rank$r.log" 2>&1 &
        r=$((r + 1))
    done
    status=0
    wait || status=$?
    grep -h "hook stats" "$W/rank0.log" | cut -c1-300 || true
    if [ "$status" -ne 0 ]; then
        echo "ddp_results: $2 on $1 failed:" >&2
        tail -20 "$W"/rank*.log >&2
        return 1
    fi
    grep '^{' "$W/rank0.log" | tail -1 | cut -c1-200
}

for net in $NETS; do
    [ "$net" = lo ] && continue
    if [ "$(id -u)" != 0 ]; then echo "ddp_results: the emulated cluster needs root" >&2; exit 77; fi
    build_cluster "$N" "$net"
    break  # one cluster (one rate) per run
done
rep=0
while [ "$rep" -lt "$REPS" ]; do
    for net in $NETS; do
        hooks=$HOOKS
        [ "$net" = lo ] && [ -n "$LOHOOKS" ] && hooks=$LOHOOKS
        for hook in $hooks; do
            echo "== rep $rep, net $net, hook $hook ($(date +%T))"
            run "$net" "$hook" "$rep" || echo "== $hook on $net failed: no results for it"
        done
    done
    rep=$((rep + 1))
done
/usr/bin/python3 scripts/ddp_results_plot.py "$OUT.jsonl" "$TARGET" "$OUT.png" | tee "$OUT.txt"
a=""; [ "$APPEND" = 1 ] && a=" -a (replacing these hooks' runs; the others are from earlier runs)"
echo "command: scripts/ddp_results.sh -l \"$NETS\" -k \"$HOOKS\" -K \"$LOHOOKS\" -e $EPOCHS -b $BATCH -r $REPS -t $TARGET -o $OUT$a" >> "$OUT.txt"
