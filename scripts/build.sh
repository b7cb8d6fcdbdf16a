#!/bin/sh
# Configure and build terse in the source tree. Extra arguments go to configure.
set -eu
cd "$(dirname "$0")/.."
[ -x configure ] && [ configure -nt configure.ac ] && [ -f Makefile.in ] || ./autogen.sh
if [ ! -f config.status ] || [ "${TERSE_RECONFIGURE:-0}" = 1 ] || [ $# -gt 0 ]; then
    ./configure --quiet "$@"
fi
make -j"$(nproc)" --no-print-directory
