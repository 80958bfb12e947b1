#!/bin/sh
# Health-check benchmark: failover timing with the default [health] settings
# and the CPU cost of checking 1,000 masters. Figures go to stdout; see
# docs/health.md for what they mean. Knobs (defaults):
#   HEALTH_BENCH_ROUNDS=10 HEALTH_BENCH_LOSSY_S=600 HEALTH_BENCH_MASTERS=1000 HEALTH_BENCH_WINDOW_S=30
set -e
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# The benchmarks are the ignored tests of the health_bench module of tests/it,
# and the vanished-host one of puppet_agent_run (in a network namespace: root).
exec ${CARGO:-cargo} test --release -q --test it -- health_bench:: puppet_agent_run::vanish_bench --ignored --nocapture --test-threads=1
