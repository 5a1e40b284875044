#!/usr/bin/env bash
# Benchmark: a 3-Front End pool with synchronous replication under SIPp REGISTER load, against the standalone Front End
# and a stock Kamailio (Debian's kamailio.cfg, only the listen address added) in the same run, over UDP and TCP.
# SIPp drives the pool through fe1, so two thirds of the REGISTERs are forwarded to their group's primary on another
# Front End, and every one is replicated to a secondary before its 200. Runs are interleaved, best of 3 per target.
# A report, not a timed test. Usage: nodes/bench/pool_vs_kamailio.sh [calls]   (default 20000 per run)
set -euo pipefail
CALLS=${1:-20000}
ROUNDS=3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SIPP_DIR=$ROOT/tests/sipp
WORK=$(mktemp -d)
STANDALONE_PORT=5260
KAM_PORT=5270
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; [ -f "$WORK/kamailio.pid" ] && kill "$(cat "$WORK/kamailio.pid")" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

need() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || { apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends "$2"; }; }
need sipp sip-tester
need kamailio kamailio
KAMAILIO=$(command -v kamailio || echo /usr/sbin/kamailio)

(cd "$ROOT" && cargo build --release -p poolnode -q)
BIN=$ROOT/target/release/poolnode

# The pool: fe1..fe3 on 127.0.0.1, peers given explicitly, heartbeats every 500 ms (a peer dead after 2 s).
export POOLNODE_CLUSTER='{"name":"bench","admin_token":"bench","users":[],"routes":[],
 "pools":[{"name":"pool1","role":"frontend","site":"s1","nodes":["fe1","fe2","fe3"]}],
 "timings":{"be_partner_timeout_ms":10000,"be_outage_grace_ms":1800000,"be_write_interval_ms":60000,
  "fe_failure_timeout_ms":2000,"fe_heartbeat_interval_ms":500,"replica_rebuild_delay_ms":300000,
  "backup_failover_interval_ms":300000,"backup_failback_interval_ms":240000,"backup_service_interval_ms":120000,
  "automatic_pool_failover":false,"registration_expiry_ms":7200000,"keep_alive_timeout_ms":300000}}'
PEERS="--peer fe1=127.0.0.1:5371 --peer fe2=127.0.0.1:5372 --peer fe3=127.0.0.1:5373"
for i in 1 2 3; do
  "$BIN" frontend --node fe$i --open --sip-listen 127.0.0.1:536$i --peer-listen 127.0.0.1:537$i \
    --admin-listen 127.0.0.1:538$i $PEERS > "$WORK/fe$i.out" 2>&1 &
  PIDS+=("$!")
done
"$BIN" frontend --standalone --open --listen 127.0.0.1:$STANDALONE_PORT > "$WORK/standalone.out" 2>&1 &
PIDS+=("$!")
sed "0,/^children=/s//listen=udp:127.0.0.1:$KAM_PORT\nlisten=tcp:127.0.0.1:$KAM_PORT\nchildren=/" /etc/kamailio/kamailio.cfg > "$WORK/kamailio.cfg"
"$KAMAILIO" -f "$WORK/kamailio.cfg" -DD -E -Y "$WORK" -P "$WORK/kamailio.pid" > "$WORK/kamailio.log" 2>&1 &
PIDS+=("$!")

# The pool serves once every group of fe1's view has an accepting primary somewhere: wait for all three to say so.
for _ in $(seq 200); do
  accepting=0
  for i in 1 2 3; do
    accepting=$((accepting + $(curl -sf 127.0.0.1:538$i/status | grep -o '"accepting_writes":true' | wc -l || true)))
  done
  [ "$accepting" -ge 6 ] && break
  sleep 0.2
done
[ "$accepting" -ge 6 ] || { echo "the pool did not start" >&2; cat "$WORK"/fe*.out >&2; exit 1; }

# Runs one SIPp load: $1 port, $2 transport (u1/t1), $3 calls. Prints calls/s (0 when the run failed).
load() {
  local port=$1 transport=$2 calls=$3 start end
  start=$(date +%s.%N)
  sipp 127.0.0.1:"$port" -sf "$SIPP_DIR/bench_register.xml" -t "$transport" -i 127.0.0.1 -m "$calls" -r 100000 -l 200 \
    -nostdin -timeout 300 -timeout_error -trace_err -error_file "$WORK/err.log" > /dev/null 2>&1 || {
    echo "FAILED (REGISTER $transport on $port):" >&2; tail -5 "$WORK/err.log" >&2; echo 0; return; }
  end=$(date +%s.%N)
  echo "$calls $start $end" | awk '{ printf "%.0f", $1 / ($3 - $2) }'
}
max() { [ "$1" -gt "$2" ] && echo "$1" || echo "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

printf "%-4s %10s %12s %12s %11s %13s\n" tr "pool/s" "standalone/s" "kamailio/s" "pool/kam" "standalone/kam"
for transport in u1 t1; do
  pool=0 standalone=0 kam=0
  for _ in $(seq $ROUNDS); do
    pool=$(max "$pool" "$(load 5361 $transport "$CALLS")")
    standalone=$(max "$standalone" "$(load $STANDALONE_PORT $transport "$CALLS")")
    kam=$(max "$kam" "$(load $KAM_PORT $transport "$CALLS")")
  done
  printf "%-4s %10s %12s %12s %11s %13s\n" $transport "$pool" "$standalone" "$kam" "$(ratio "$pool" "$kam")" "$(ratio "$standalone" "$kam")"
done
users=0
for i in 1 2 3; do users=$((users + $(curl -sf 127.0.0.1:538$i/status | sed 's/.*"users":\([0-9]*\).*/\1/'))); done
echo "users held by the pool's primaries: $users"
