#!/bin/sh
# Install, build (warnings are errors) and run the whole test suite:
# unit tests, multi-rank collectives over every transport, fault tests, the
# suite under mpirun, the Python package and terse.torch, the progress thread
# under ThreadSanitizer, and a packaging check (make distcheck).
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh --softroce
TERSE_RECONFIGURE=1 sh scripts/build.sh --enable-werror
status=0
make -j2 --no-print-directory check || status=$?
# Every log, then (so the end of the output says it) each test's result and
# the logs of the ones that failed once more.
for f in tests/*.log; do
    case "$f" in */test-suite.log) continue ;; esac
    echo "===== $f"; cat "$f"
done
echo "===== results"
grep -H '^:test-result:' tests/*.trs 2>/dev/null | sed 's/\.trs:.test-result://'
if [ "$status" -ne 0 ]; then
    failed=$(grep -l '^:test-result: *\(FAIL\|ERROR\|XPASS\)' tests/*.trs 2>/dev/null | sed 's/\.trs$//')
    for t in $failed; do
        echo "===== failed: $t: its FAIL lines, then its last 150 lines"
        grep -aE '^(=====|softroce:|FAIL|python:)|\.\.\.FAILED|Test: .*FAILED' "$t.log" | tail -60
        echo "-----"
        tail -150 "$t.log"
    done
    echo "make check failed:" $failed
    exit "$status"
fi
# The progress thread and the caller's thread under ThreadSanitizer.
KIND=thread sh scripts/sanitize.sh || { echo "ThreadSanitizer run failed"; exit 1; }
# Packaging: the tarball builds, installs and passes the unit suite on its own.
make --no-print-directory distcheck TESTS="tests/test_unit" DISTCHECK_CONFIGURE_FLAGS="--enable-werror" >distcheck.log 2>&1 \
    || { tail -50 distcheck.log; echo "make distcheck failed"; exit 1; }
echo "distcheck: OK"
# One closing line over every CUnit suite that ran (test cases, not asserts).
cat tests/test_unit.log tests/test_codec.log tests/test_coll.log tests/test_fault.log tests/test_wire.log tests/test_compressed.log tests/test_sparse.log tests/test_comm.log tests/test_plan.log tests/test_progress.log tests/test_partial.log tests/test_adacons.log tests/test_ebound.log tests/test_mpi.sh.log tests/test_pmpi.sh.log tests/test_python.sh.log tests/test_softroce.sh.log 2>/dev/null |
    awk '$1 == "tests" && NF == 6 { p += $4; f += $5 } END { printf "terse: %d passed, %d failed\n", p, f }'

