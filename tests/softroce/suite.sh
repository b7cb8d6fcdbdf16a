#!/bin/sh
# The multi-rank suites over verbs, run inside the soft-RoCE guest (or natively
# on a machine with RDMA) by tests/softroce/run.sh. Writes a closing summary.
set -u
export TERSE_TEST_TRANSPORTS=verbs
# the guest is emulated: keep the edge cases, drop the largest sizes
export TERSE_TEST_QUICK=${TERSE_TEST_QUICK:-1}
status=0
for t in tests/test_coll tests/test_compressed tests/test_sparse tests/test_fault tests/test_comm tests/test_plan tests/test_progress tests/test_partial tests/test_adacons tests/test_ebound; do
    echo "===== $t over verbs"
    start=$(date +%s)
    timeout "${TERSE_SOFTROCE_SUITE_TIMEOUT:-1800}" "./$t"
    rc=$?
    [ "$rc" -eq 0 ] || status=1
    echo "===== $t: exit $rc after $(( $(date +%s) - start )) s"
done
# The Python bindings over verbs, and a DataLoader forking its workers after
# the communicator registered memory (rdma-core's fork rules).
echo "===== python over verbs"
start=$(date +%s)
TERSE_TEST_PY_RUNS="2:test_bindings.py" timeout 1200 sh tests/test_python.sh || status=1
TERSE_TEST_PY_RUNS="2:test_torch.py" TERSE_TEST_FILTER=dataloader timeout 1200 sh tests/test_python.sh || status=1
echo "===== python over verbs: after $(( $(date +%s) - start )) s"
exit $status
