#!/usr/bin/env bash
# Benchmark: the standalone Front End against a stock Kamailio registrar (Debian's default kamailio.cfg, only the
# listen address changed), both driven by SIPp on this machine, REGISTER and MESSAGE, over UDP and TCP.
# Prints calls/s for each, our ratio to Kamailio, and the Front End's resident size with 10,000 registered users.
# A report, not a timed test. Usage: nodes/bench/sip_vs_kamailio.sh [calls]   (default 20000 per run)
set -euo pipefail
CALLS=${1:-20000}
USERS=10000
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SIPP_DIR=$ROOT/tests/sipp
WORK=$(mktemp -d)
FE_PORT=5260
KAM_PORT=5270
UAS_PORT=5280
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; [ -f "$WORK/kamailio.pid" ] && kill "$(cat "$WORK/kamailio.pid")" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

need() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || { apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends "$2"; }; }
need sipp sip-tester
need kamailio kamailio
KAMAILIO=$(command -v kamailio || echo /usr/sbin/kamailio)

(cd "$ROOT" && cargo build --release -p poolnode -q)
"$ROOT/target/release/poolnode" frontend --standalone --open --listen 127.0.0.1:$FE_PORT > "$WORK/fe.out" 2>&1 &
FE_PID=$!; PIDS+=("$FE_PID")
for _ in $(seq 100); do grep -q "ready sip=" "$WORK/fe.out" 2>/dev/null && break; sleep 0.1; done

# Kamailio: the stock configuration with only the listen address and port added.
sed "0,/^children=/s//listen=udp:127.0.0.1:$KAM_PORT\nlisten=tcp:127.0.0.1:$KAM_PORT\nchildren=/" /etc/kamailio/kamailio.cfg > "$WORK/kamailio.cfg"
"$KAMAILIO" -f "$WORK/kamailio.cfg" -DD -E -Y "$WORK" -P "$WORK/kamailio.pid" > "$WORK/kamailio.log" 2>&1 &
PIDS+=("$!")
sleep 2

# Runs one SIPp load: $1 port, $2 scenario, $3 transport (u1/t1), $4 calls, rest extra args. Prints calls/s.
load() {
  local port=$1 scenario=$2 transport=$3 calls=$4; shift 4
  local start end
  start=$(date +%s.%N)
  sipp 127.0.0.1:"$port" -sf "$SIPP_DIR/$scenario.xml" -t "$transport" -i 127.0.0.1 -m "$calls" -r 100000 -l 200 \
    -nostdin -timeout 300 -timeout_error -trace_err -error_file "$WORK/err.log" "$@" > /dev/null 2>&1 || {
    echo "FAILED ($scenario $transport on $port):" >&2; tail -5 "$WORK/err.log" >&2; echo 0; return; }
  end=$(date +%s.%N)
  echo "$calls $start $end" | awk '{ printf "%.0f", $1 / ($3 - $2) }'
}

rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }

# 10,000 distinct users registered over UDP, then the Front End's resident size.
load $FE_PORT bench_register u1 $USERS > /dev/null
RSS_KB=$(rss_kb "$FE_PID")

printf "%-10s %-4s %12s %12s %7s\n" method tr "frontend/s" "kamailio/s" ratio
for transport in u1 t1; do
  fe=$(load $FE_PORT bench_register $transport "$CALLS")
  kam=$(load $KAM_PORT bench_register $transport "$CALLS")
  printf "%-10s %-4s %12s %12s %7s\n" REGISTER $transport "$fe" "$kam" "$(awk -v a="$fe" -v b="$kam" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
done
port_next=$UAS_PORT
for transport in u1 t1; do
  for target in $FE_PORT $KAM_PORT; do
    port_next=$((port_next + 1))
    sipp 127.0.0.1:$target -sf "$SIPP_DIR/message_uas.xml" -t $transport -i 127.0.0.1 -p $port_next -nostdin > /dev/null 2>&1 &
    PIDS+=("$!"); sleep 0.5
    sipp 127.0.0.1:$target -sf "$SIPP_DIR/register_contact.xml" -s bob$port_next -key contact_port $port_next -t $transport \
      -i 127.0.0.1 -m 1 -nostdin -timeout 20 > /dev/null 2>&1
    result=$(load $target message_uac $transport "$CALLS" -s bob$port_next)
    if [ "$target" = $FE_PORT ]; then fe=$result; else kam=$result; fi
  done
  printf "%-10s %-4s %12s %12s %7s\n" MESSAGE $transport "$fe" "$kam" "$(awk -v a="$fe" -v b="$kam" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
done
echo "frontend resident size with $USERS registered users: $((RSS_KB / 1024)) MiB ($RSS_KB KiB)"
