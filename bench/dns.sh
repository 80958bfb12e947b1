#!/bin/sh
# DNS throughput on loopback: srvd (release build, example zone) against NSD
# and gdnsd serving the same records, all measured with dnsperf. Prints queries/s.
#   bench/dns.sh [seconds]      (default 10 s per server)
set -eu
cd "$(dirname "$0")/.."
secs=${1:-10}
command -v dnsperf >/dev/null || { echo "dns bench: needs dnsperf (apt-get install dnsperf)"; exit 0; }
cargo build --release -q --bins
tmp=$(mktemp -d)
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

port=25353
sed -e "s|listen = \[\"127.0.0.1:5353\"\]|listen = [\"127.0.0.1:$port\"]|" zones/example.toml > "$tmp/srvd.toml"
cp zones/example-masters.toml zones/example.zone "$tmp/"
SRVD_LOG=warn ./target/release/srvd --config "$tmp/srvd.toml" & pids="$pids $!"
for i in $(seq 50); do dig +short +time=1 -p $port @127.0.0.1 puppet.example.test SOA >/dev/null 2>&1 && break; sleep 0.1; done

# Query mix: every published SRV name, apex SOA/NS, an address, a miss.
o=puppet.example.test
: > "$tmp/queries"
for s in dc1. dc2. dc3. ""; do
  for svc in _x-puppet _x-puppet-ca _x-puppet-report _x-puppet-fileserver; do
    echo "$svc._tcp.$s$o SRV" >> "$tmp/queries"
  done
done
printf '%s SOA\n%s NS\npm1.dc1.%s A\nnothing.%s A\n' $o $o $o $o >> "$tmp/queries"

run() { # name port
  dnsperf -s 127.0.0.1 -p "$2" -d "$tmp/queries" -l "$secs" -c 4 -T 1 -q 200 2>&1 |
    awk -v n="$1" '/Queries per second/ {q=$4} /Average Latency/ {l=$4} /Queries lost/ {lost=$3}
      END {printf "%-8s %10.0f qps   avg latency %s s   lost %s\n", n, q, l, lost}'
}
echo "DNS throughput, dnsperf, ${secs}s, 4 clients, $(nproc) cores, loopback UDP"
run srvd $port

# The same records, copied out of srvd with dig, for the reference servers.
{ dig +noall +answer -p $port @127.0.0.1 $o SOA
    for q in $(awk '{print $1 "/" $2}' "$tmp/queries"); do
      dig +noall +answer -p $port @127.0.0.1 "${q%/*}" "${q#*/}"
    done
    for h in pm1.dc1 pm2.dc1 ca1.dc1 pm1.dc2 ca2.dc2 pm1.dc3 ns1; do
      dig +noall +answer -p $port @127.0.0.1 $h.$o A; dig +noall +answer -p $port @127.0.0.1 $h.$o AAAA
    done
    dig +noall +answer -p $port @127.0.0.1 $o TXT
} | sort -u > "$tmp/ref.zone"

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
  nsd -c "$tmp/nsd.conf" -d >"$tmp/nsd.log" 2>&1 & pids="$pids $!"
  for i in $(seq 50); do dig +short +time=1 -p $nport @127.0.0.1 $o SOA >/dev/null 2>&1 && break; sleep 0.1; done
  run nsd $nport
  grep -iE "error|warn" "$tmp/nsd.log" | head -5 || true
fi

if command -v gdnsd >/dev/null; then
  gport=25355
  mkdir -p "$tmp/gdnsd/zones"
  cp "$tmp/ref.zone" "$tmp/gdnsd/zones/$o"
  cat > "$tmp/gdnsd/config" <<CONF
options => {
  listen => [ 127.0.0.1:$gport ]
  run_dir => $tmp/gdnsd/run
  state_dir => $tmp/gdnsd/state
}
CONF
  gdnsd -c "$tmp/gdnsd" start >"$tmp/gdnsd.log" 2>&1 & pids="$pids $!"
  for i in $(seq 50); do dig +short +time=1 -p $gport @127.0.0.1 $o SOA >/dev/null 2>&1 && break; sleep 0.1; done
  run gdnsd $gport
fi
