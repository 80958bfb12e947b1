#!/bin/sh
# DNS on loopback UDP: srvd (release build, example zone) against NSD and
# gdnsd serving the same records, all driven by dnsperf with the same query
# mix (~12 % NXDOMAIN), in interleaved rounds (the order rotates each round,
# so a neighbour's build slows every server alike). Per server it prints the
# median queries/s, latency and server CPU per answered query over the
# rounds (with min..max), the lost queries, and srvd's ratios to gdnsd.
#   bench/dns.sh [seconds per run] [rounds]        (default 5 s, 5 rounds)
#   DNS_BENCH_CLIENTS=4 DNS_BENCH_OUTSTANDING=100  (dnsperf -c, -q)
# Then the cost of answers chosen by client network ([[site]] networks):
# a second srvd whose dc1 owns 127.0.0.0/8 answers the site-less names
# (one template per site, picked per query) and dc1's own names, in
# alternating runs; it prints the CPU per query of each and their ratio.
# Server CPU: utime + stime of the server process (and its child processes:
# NSD forks its workers) from /proc/PID/stat, read before and after each
# run, divided by the queries dnsperf saw answered.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-5}
clients=${DNS_BENCH_CLIENTS:-4}
outstanding=${DNS_BENCH_OUTSTANDING:-100}
command -v dnsperf >/dev/null || { echo "dns bench: needs dnsperf (make bench-deps)"; exit 0; }
cargo build --release -q --bins
tmp=$(mktemp -d)
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
[ -n "${DNS_BENCH_DEBUG:-}" ] && set -x
hz=$(getconf CLK_TCK)

wait_up() { # port
  for i in $(seq 100); do dig +short +time=1 +tries=1 -p "$1" @127.0.0.1 $o SOA >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "dns bench: nothing answers on port $1" >&2; return 1
}

# utime+stime (clock ticks) of a process and all its descendants (NSD
# forks its server processes; srvd and gdnsd use threads, counted in the
# process's own figures).
cpu_ticks() { # pid
  for f in /proc/[0-9]*/stat; do cat "$f" 2>/dev/null || true; done |
    awk -v root="$1" '{ pid = $1 + 0; s = $0; sub(/.*\) /, "", s); split(s, a, " ");
      # after "pid (comm) ": a[1] state, a[2] ppid, ..., a[12] utime, a[13] stime
      parent[pid] = a[2] + 0; ticks[pid] = a[12] + a[13] }
      END { in_tree[root] = 1; grew = 1
            while (grew) { grew = 0; for (p in parent) if (!(p in in_tree) && (parent[p] in in_tree)) { in_tree[p] = 1; grew = 1 } }
            for (p in in_tree) t += ticks[p]; print t + 0 }'
}

o=puppet.example.test
port=25353
sed -e "s|listen = \[\"127.0.0.1:5353\"\]|listen = [\"127.0.0.1:$port\"]|" zones/example.toml > "$tmp/srvd.toml"
cp zones/example-masters.toml zones/example.zone "$tmp/"
SRVD_LOG=warn ./target/release/srvd --config "$tmp/srvd.toml" 2>"$tmp/srvd.log" & srvd_pid=$!; pids="$pids $srvd_pid"
wait_up $port

# Query mix: every published SRV name, apex SOA/NS, addresses (22 that
# exist) and 3 misses: 3/25 = 12 % NXDOMAIN.
: > "$tmp/queries"
for s in dc1. dc2. dc3. ""; do
  for svc in _x-puppet _x-puppet-ca _x-puppet-report _x-puppet-fileserver; do
    echo "$svc._tcp.$s$o SRV" >> "$tmp/queries"
  done
done
printf '%s SOA\n%s NS\npm1.dc1.%s A\npm1.dc2.%s A\nca1.dc1.%s A\nns1.%s A\n' $o $o $o $o $o $o >> "$tmp/queries"
printf 'nothing.%s A\n_x-puppet._tcp.dc9.%s SRV\nold-pm.dc1.%s AAAA\n' $o $o $o >> "$tmp/queries"

# The same records, copied out of srvd with dig, for the reference servers.
{ dig +noall +answer -p $port @127.0.0.1 $o SOA
    for q in $(awk '{print $1 "/" $2}' "$tmp/queries"); do
      dig +noall +answer -p $port @127.0.0.1 "${q%/*}" "${q#*/}"
    done
    for h in pm1.dc1 pm2.dc1 ca1.dc1 pm1.dc2 ca2.dc2 pm1.dc3 ns1; do
      dig +noall +answer -p $port @127.0.0.1 $h.$o A; dig +noall +answer -p $port @127.0.0.1 $h.$o AAAA
    done
    dig +noall +answer -p $port @127.0.0.1 $o TXT
} | sort -u | awk '$4 != "SOA" || !soa++' > "$tmp/ref.zone"

servers="srvd:$port:$srvd_pid"
if command -v nsd >/dev/null; then
  cp "$tmp/ref.zone" "$tmp/nsd.zone"
  nport=25354
  cat > "$tmp/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$nport
  zonesdir: "$tmp"
  pidfile: "$tmp/nsd.pid"
  database: ""
  username: ""
  xfrdfile: "$tmp/xfrd.state"
  zonelistfile: "$tmp/zone.list"
  server-count: $(nproc)
  verbosity: 0
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: $o
  zonefile: nsd.zone
CONF
  nsd -c "$tmp/nsd.conf" -d >"$tmp/nsd.log" 2>&1 & nsd_pid=$!; pids="$pids $nsd_pid"
  wait_up $nport && servers="$servers nsd:$nport:$nsd_pid"
  grep -iE "error|warn" "$tmp/nsd.log" | head -5 || true
fi
if command -v gdnsd >/dev/null; then
  gport=25355
  mkdir -p "$tmp/gdnsd/zones"
  cp "$tmp/ref.zone" "$tmp/gdnsd/zones/$o"
  cat > "$tmp/gdnsd/config" <<CONF
options => {
  listen => [ 127.0.0.1:$gport ]
}
CONF
  gdnsd -c "$tmp/gdnsd" start >"$tmp/gdnsd.log" 2>&1 & gdnsd_pid=$!; pids="$pids $gdnsd_pid"
  wait_up $gport && servers="$servers gdnsd:$gport:$gdnsd_pid"
fi

echo "DNS bench: dnsperf -c $clients -T 1 -q $outstanding, $rounds rounds x ${secs}s per server, interleaved;" \
  "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), kernel $(uname -r), loopback UDP"
echo "query mix: $(wc -l < "$tmp/queries") names, $(grep -c -e '^nothing' -e 'dc9' -e 'old-pm' "$tmp/queries") of them NXDOMAIN"
: > "$tmp/results"
r=1
while [ $r -le "$rounds" ]; do
  # Rotate the order: round r starts with server number r.
  set -- $servers
  n=$#; k=$(( (r - 1) % n )); i=0; order=""
  while [ $i -lt $n ]; do
    eval "s=\${$(( (k + i) % n + 1 ))}"; order="$order $s"; i=$((i + 1))
  done
  for s in $order; do
    name=${s%%:*}; rest=${s#*:}; p=${rest%%:*}; pid=${rest#*:}
    before=$(cpu_ticks "$pid")
    dnsperf -s 127.0.0.1 -p "$p" -d "$tmp/queries" -l "$secs" -c "$clients" -T 1 -q "$outstanding" > "$tmp/out" 2>&1 || true
    after=$(cpu_ticks "$pid")
    awk -v n="$name" -v r=$r -v cpu=$((after - before)) -v hz="$hz" '
      /Queries completed/ {done = $3} /Queries lost/ {lost = $3}
      /Queries per second/ {q = $4} /Average Latency/ {l = $4}
      END { us = done > 0 ? cpu / hz * 1e6 / done : 0;
            printf "%s %d %.0f %.1f %d %.3f %d\n", n, r, q, l * 1e6, lost, us, done }' "$tmp/out" >> "$tmp/results"
    tail -1 "$tmp/results" | awk '{printf "  round %d %-6s %8d qps  latency %6.1f us  lost %d  cpu %.2f us/query\n", $2, $1, $3, $4, $5, $6}'
  done
  r=$((r + 1))
done

echo
printf '%-6s %9s %17s %12s %18s %6s\n' server "qps(med)" "(min..max)" "latency us" "cpu us/q (med)" lost
for s in $servers; do
  name=${s%%:*}
  awk -v n="$name" '$1 == n' "$tmp/results" > "$tmp/one"
  qs=$(awk '{print $3}' "$tmp/one" | sort -n | tr '\n' ' ')
  ls=$(awk '{print $4}' "$tmp/one" | sort -n | tr '\n' ' ')
  cs=$(awk '{print $6}' "$tmp/one" | sort -n | tr '\n' ' ')
  lost=$(awk '{t += $5} END {print t + 0}' "$tmp/one")
  echo "$name $lost | $qs| $ls| $cs"
done | awk -F'|' '
  function med(s,   a, k) { k = split(s, a, " "); return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
  function lo(s,   a) { split(s, a, " "); return a[1] }
  function hi(s,   a, k) { k = split(s, a, " "); return a[k] }
  { split($1, h, " "); n = h[1]; lost = h[2];
    q[n] = med($2); c[n] = med($4);
    printf "%-6s %9.0f %17s %12.1f %8.2f (%s..%s) %6d\n", n, q[n], "(" lo($2) ".." hi($2) ")", med($3), c[n], lo($4), hi($4), lost }
  END { if (("srvd" in q) && ("gdnsd" in q) && q["gdnsd"] > 0 && c["gdnsd"] > 0)
          printf "srvd / gdnsd: cpu per query %.2fx (target <= 0.90), qps %.2fx (target >= 1.10)\n", c["srvd"] / c["gdnsd"], q["srvd"] / q["gdnsd"] }'

# ---- answers chosen by client network vs per-site names --------------------
nport=25356
sed -e "s|listen = \[\"127.0.0.1:5353\"\]|listen = [\"127.0.0.1:$nport\"]|" \
    -e "s|^metrics = .*||" -e "s|^notify = false.*|notify = false|" \
    -e 's|^\[server\]|[server]\nallow_secondaries_with_networks = true|' \
    -e 's|^name = "dc1"|name = "dc1"\nnetworks = ["127.0.0.0/8", "10.1.0.0/16", "2001:db8:1::/48"]|' \
    -e 's|^name = "dc2"|name = "dc2"\nnetworks = ["10.2.0.0/16", "10.1.5.0/24", "2001:db8:2::/48"]|' \
    -e 's|^name = "dc3"|name = "dc3"\nnetworks = ["10.3.0.0/16", "192.168.0.0/16"]|' \
    -e "s|state_dir = \"state\"|state_dir = \"state-net\"|" -e "s|\"control.sock\"|\"control-net.sock\"|" zones/example.toml > "$tmp/srvd-net.toml"
SRVD_LOG=warn ./target/release/srvd --config "$tmp/srvd-net.toml" 2>"$tmp/srvd-net.log" & net_pid=$!; pids="$pids $net_pid"
wait_up $nport
for svc in _x-puppet _x-puppet-ca _x-puppet-report _x-puppet-fileserver; do echo "$svc._tcp.dc1.$o SRV"; done > "$tmp/q-site"
for svc in _x-puppet _x-puppet-ca _x-puppet-report _x-puppet-fileserver; do echo "$svc._tcp.$o SRV"; done > "$tmp/q-net"
# The same records either way (owner names aside): dc1's.
a=$(dig +short -p $nport @127.0.0.1 _x-puppet._tcp.dc1.$o SRV | sort); b=$(dig +short -p $nport @127.0.0.1 _x-puppet._tcp.$o SRV | sort)
[ "$a" = "$b" ] || echo "dns bench: the site-less answer is not dc1's: $b" >&2
: > "$tmp/net-results"
r=1
while [ $r -le "$rounds" ]; do
  for kind in site net; do
    before=$(cpu_ticks "$net_pid")
    dnsperf -s 127.0.0.1 -p "$nport" -d "$tmp/q-$kind" -l "$secs" -c "$clients" -T 1 -q "$outstanding" > "$tmp/out" 2>&1 || true
    after=$(cpu_ticks "$net_pid")
    awk -v k=$kind -v cpu=$((after - before)) -v hz="$hz" '/Queries completed/ {done = $3} /Queries per second/ {q = $4}
      END { us = done > 0 ? cpu / hz * 1e6 / done : 0; printf "%s %.0f %.3f\n", k, q, us }' "$tmp/out" >> "$tmp/net-results"
  done
  r=$((r + 1))
done
echo
awk 'function med(s,   a, k, i, j, t) { k = split(s, a, " ");
    for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
  { q[$1] = q[$1] " " $2; c[$1] = c[$1] " " $3 }
  END { printf "by client network: per-site names %.0f qps %.2f us/query; site-less names chosen by network %.0f qps %.2f us/query; cpu ratio %.2fx\n",
          med(q["site"]), med(c["site"]), med(q["net"]), med(c["net"]), (med(c["site"]) > 0 ? med(c["net"]) / med(c["site"]) : 0) }' "$tmp/net-results"
