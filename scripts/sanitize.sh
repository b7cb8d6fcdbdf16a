#!/bin/sh
# Hardening run: build a scratch copy of the tracked sources with
# AddressSanitizer + UndefinedBehaviorSanitizer (configure --enable-sanitizers)
# and run the suites whose verdicts do not hang on timing. Any sanitizer report
# fails the run, as does a failing test.
#   sh scripts/sanitize.sh      SUITES ("test_unit test_codec test_wire test_sparse
#                               test_compressed"; test_coll takes about half an hour),
#                               SANITIZE_DIR (/tmp/terse-sanitize)
set -eu
cd "$(dirname "$0")/.."
dir=${SANITIZE_DIR:-/tmp/terse-sanitize}
SUITES=${SUITES:-test_unit test_codec test_wire test_sparse test_compressed}
command -v git >/dev/null && git rev-parse --git-dir >/dev/null 2>&1 ||
    { echo "sanitize: needs a git checkout (it builds a copy of the tracked files)" >&2; exit 2; }
rm -rf "$dir"
mkdir -p "$dir"
git ls-files -z | xargs -0 tar cf - | tar xf - -C "$dir"
cd "$dir"
./autogen.sh >/dev/null 2>&1
./configure --quiet --enable-sanitizers --enable-werror
make -j"$(nproc)" --no-print-directory $(for t in $SUITES; do printf 'tests/%s ' "$t"; done) >build.log 2>&1 ||
    { tail -30 build.log; echo "sanitize: build failed" >&2; exit 1; }
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1
status=0
for t in $SUITES; do
    start=$(date +%s)
    if ./tests/"$t" >"$t.log" 2>&1; then rc=0; else rc=$?; fi
    reports=$(grep -cE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$t.log" || true)
    if [ "$rc" -ne 0 ] || [ "$reports" -ne 0 ]; then
        status=1
        echo "sanitize: $t FAILED (exit $rc, $reports sanitizer reports; log $dir/$t.log)"
        grep -m5 -A8 -E "ERROR: (Address|Leak)Sanitizer|runtime error:|FAILED" "$t.log" || true
    else
        echo "sanitize: $t clean ($(($(date +%s) - start)) s)"
    fi
done
exit $status
