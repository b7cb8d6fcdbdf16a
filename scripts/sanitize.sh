#!/bin/sh
# Hardening run: build a scratch copy of the tracked sources with sanitizers
# (configure --enable-sanitizers=KIND) and run the suites whose verdicts do
# not hang on timing. Any sanitizer report fails the run, as does a failing test.
#   sh scripts/sanitize.sh               AddressSanitizer + UBSan over SUITES
#                                        ("test_unit test_codec test_wire test_sparse test_compressed";
#                                        test_coll takes about half an hour)
#   KIND=thread sh scripts/sanitize.sh   ThreadSanitizer over the progress thread: SUITES
#                                        ("test_progress test_compressed test_sparse test_partial"), run with
#                                        TERSE_PROGRESS_THREAD=1
#   SANITIZE_DIR                         scratch directory (/tmp/terse-sanitize-KIND)
set -eu
cd "$(dirname "$0")/.."
KIND=${KIND:-address}
dir=${SANITIZE_DIR:-/tmp/terse-sanitize-$KIND}
case $KIND in
address) SUITES=${SUITES:-test_unit test_codec test_wire test_sparse test_compressed}
         pattern="ERROR: (Address|Leak)Sanitizer|runtime error:" ;;
thread)  SUITES=${SUITES:-test_progress test_compressed test_sparse test_partial}
         pattern="WARNING: ThreadSanitizer"
         export TERSE_PROGRESS_THREAD=1 ;;
*) echo "sanitize: KIND is address or thread" >&2; exit 2 ;;
esac
command -v git >/dev/null && git rev-parse --git-dir >/dev/null 2>&1 ||
    { echo "sanitize: needs a git checkout (it builds a copy of the tracked files)" >&2; exit 2; }
rm -rf "$dir"
mkdir -p "$dir"
git ls-files -z | xargs -0 tar cf - | tar xf - -C "$dir"
cd "$dir"
./autogen.sh >/dev/null 2>&1
./configure --quiet --enable-sanitizers="$KIND" --enable-werror
make -j"$(nproc)" --no-print-directory $(for t in $SUITES; do printf 'tests/%s ' "$t"; done) >build.log 2>&1 ||
    { tail -30 build.log; echo "sanitize: build failed" >&2; exit 1; }
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1
export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1"
status=0
for t in $SUITES; do
    start=$(date +%s)
    if TERSE_TEST_QUICK=1 ./tests/"$t" >"$t.log" 2>&1; then rc=0; else rc=$?; fi
    reports=$(grep -cE "$pattern" "$t.log" || true)
    if [ "$rc" -ne 0 ] || [ "$reports" -ne 0 ]; then
        status=1
        echo "sanitize ($KIND): $t FAILED (exit $rc, $reports sanitizer reports; log $dir/$t.log)"
        grep -m5 -A12 -E "$pattern|FAILED" "$t.log" || true
    else
        echo "sanitize ($KIND): $t clean ($(($(date +%s) - start)) s)"
    fi
done
exit $status
