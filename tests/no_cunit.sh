#!/bin/sh
# Built without CUnit: the suites cannot run. Fail loudly rather than pass empty.
echo "FAIL: CUnit was not found at configure time; install libcunit1-dev (scripts/install-deps.sh) and re-run configure" >&2
exit 1
