#!/bin/sh
# Scale figures for docs/performance.md: first publication and a site-less
# TCP SRV answer with 1,000 and 10,000 masters, and the time from one
# health change to the new snapshot being served with 100 sites x 1,000
# masters (and the memory of that snapshot). The CPU cost of checking
# 1,000 masters is in bench/health.sh.
set -e
cd "$(dirname "$0")/.."
exec ${CARGO:-cargo} test --release -q --test it -- scale:: --ignored --nocapture --test-threads=1
