#!/bin/sh
# The Python package (python/terse) and terse.torch, with Debian's python3:
# the bindings against numpy references over 1-4 ranks, the "terse"
# ProcessGroup backend and the DDP hooks over 2 and 4 ranks (one process per
# rank, python/tests/launch.py). Over TCP here; tests/softroce/suite.sh runs
# the bindings and the DataLoader fork case over verbs in the guest.
# TERSE_TEST_TRANSPORTS=verbs runs them over verbs (soft-RoCE).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3
if ! $PY -c "import numpy, torch" 2>/dev/null; then
    why="python3-numpy or python3-torch is missing (scripts/install-deps.sh installs them)"
    if [ "${CI:-}" = true ]; then
        echo "FAIL: $why - CI must run the Python tests"
        exit 1
    fi
    echo "SKIP: $why"
    exit 77
fi
export TERSE_LIBRARY="$top/lib/.libs/libterse.so.1"
case "${TERSE_TEST_TRANSPORTS:-tcp}" in *verbs*) export TERSE_TRANSPORT=verbs ;; esac
W=$(mktemp -d /tmp/terse-python.XXXXXX)
trap 'rm -rf "$W"' EXIT
pass=0 fail=0

# run N PROGRAM: every case of PROGRAM on N ranks; a case passes when it
# passed on every rank, and a run that fails outside the cases fails too.
run() {
    log="$W/$2.$1.log"
    TERSE_TEST_FILTER=${TERSE_TEST_FILTER:-} $PY "$top/python/tests/launch.py" -n "$1" -t 600 \
        "$top/python/tests/$2" > "$log" 2>&1
    rc=$?
    counts=$(awk '/^\[[0-9]+\] (PASS|FAIL):/ {
            st = ($2 == "PASS:") ? "p" : "f"; name = $3 " " $4 " " $5
            if (!(name in s) || st == "f") s[name] = st
        }
        END { p = 0; f = 0; for (k in s) { if (s[k] == "p") p++; else f++ } print p, f }' "$log")
    p=${counts% *} f=${counts#* }
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "FAIL: $2 on $1 ranks exited $rc outside its cases"
    fi
    pass=$((pass + p)) fail=$((fail + f))
    grep -aE '^\[0\] (PASS|FAIL)' "$log" | sed 's/^\[0\] //' | cut -c1-200
    if [ "$f" -ne 0 ]; then
        echo "----- $2 on $1 ranks (exit $rc):"
        grep -avE '^\[[0-9]+\] PASS' "$log" | tail -80
    fi
}

# TERSE_TEST_PY_RUNS: the runs as RANKS:PROGRAM (the soft-RoCE guest runs fewer)
for r in ${TERSE_TEST_PY_RUNS:-1:test_bindings.py 2:test_bindings.py 3:test_bindings.py 4:test_bindings.py 2:test_torch.py 4:test_torch.py}; do
    run "${r%%:*}" "${r#*:}"
done
echo "python: $pass cases passed, $fail failed"
# the closing line scripts/test-all.sh adds up, as CUnit writes it
printf '               tests %6d %6d %6d %6d      0\n' $((pass + fail)) $((pass + fail)) "$pass" "$fail"
[ "$fail" -eq 0 ]
