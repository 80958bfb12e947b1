#!/bin/sh
# Scale figures for docs/performance.md: first publication and a site-less
# TCP SRV answer with 1,000 and 10,000 masters, and the time from one
# health change to the new snapshot being served with 100 sites x 1,000
# masters (and the memory of that snapshot), where that time goes, and the
# CPU share and RSS of the srvd binary checking 1,000 and 10,000 tcp
# masters with the default timing (SCALE_BENCH_WINDOW_S=30).
set -e
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec ${CARGO:-cargo} test --release -q --test it -- scale:: --ignored --nocapture --test-threads=1
