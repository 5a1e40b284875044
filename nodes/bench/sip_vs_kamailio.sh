#!/usr/bin/env bash
# Benchmark: the standalone Front End against a stock Kamailio registrar (Debian's default kamailio.cfg, only the
# listen address changed), both driven by SIPp on this machine, REGISTER and MESSAGE, over UDP and TCP.
# Prints calls/s for each (best and median of ROUNDS runs, the two servers' runs interleaved A B A B ... so both see
# the same background load), our ratio to Kamailio, and the Front End's resident size with 10,000 registered users.
# A report, not a timed test. Usage: nodes/bench/sip_vs_kamailio.sh [calls [rounds]]   (default 20000 calls, 5 rounds)
#
# Kamailio runs with `-m 1024` (1 GiB of shared memory) instead of the package's 64 MiB (SHM_MEMORY in
# /etc/default/kamailio): the stock route relays a MESSAGE statefully (t_relay), and tm keeps every finished
# transaction for its wait timer (5 s) at about 13 KB of shared memory each. Past ~900 MESSAGE/s the 64 MiB run out:
# new transactions fail ("tm: new_t(): out of mem"), the sender gets 500s or nothing at all, so the UDP runs ended in
# retransmission timeouts and the TCP runs (no retransmissions) waited for SIPp's timeout. 1 GiB holds > 60,000
# transactions; nothing in kamailio.cfg changes. Before each Kamailio run the script also waits (bounded) for the
# previous run's transactions to be freed, so every run starts from the same state.
set -euo pipefail
CALLS=${1:-20000}
ROUNDS=${2:-5}
USERS=10000
RUN_TIMEOUT=120         # SIPp's own limit per run (s); `timeout` kills it 30 s later regardless
# SIPp's sockets get 4 MiB buffers (its default is 64 KiB): the recipient SIPp otherwise drops relayed MESSAGEs in
# bursts, and every drop costs a 500 ms retransmission, whichever server relayed it.
SIPP=(sipp -buff_size 4194304)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SIPP_DIR=$ROOT/tests/sipp
WORK=$(mktemp -d)
FE_PORT=5260
KAM_PORT=5270
UAS_PORT=5280
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/kamailio.pid" ] && kill "$(cat "$WORK/kamailio.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || { apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends "$2"; }; }
need sipp sip-tester
need kamailio kamailio
KAMAILIO=$(command -v kamailio || echo /usr/sbin/kamailio)
KAMCMD=$(command -v kamcmd || echo /usr/sbin/kamcmd)

(cd "$ROOT" && cargo build --release -p poolnode -q)
"$ROOT/target/release/poolnode" frontend --standalone --open --listen 127.0.0.1:$FE_PORT > "$WORK/fe.out" 2>&1 &
FE_PID=$!; PIDS+=("$FE_PID")
for _ in $(seq 100); do grep -q "ready sip=" "$WORK/fe.out" 2>/dev/null && break; sleep 0.1; done
grep -q "ready sip=" "$WORK/fe.out" || { echo "the Front End did not start" >&2; cat "$WORK/fe.out" >&2; exit 1; }

# Kamailio: the stock configuration with only the listen address and port added; 1 GiB of shared memory (see above).
sed "0,/^children=/s//listen=udp:127.0.0.1:$KAM_PORT\nlisten=tcp:127.0.0.1:$KAM_PORT\nchildren=/" /etc/kamailio/kamailio.cfg > "$WORK/kamailio.cfg"
"$KAMAILIO" -f "$WORK/kamailio.cfg" -m 1024 -DD -E -Y "$WORK" -P "$WORK/kamailio.pid" > "$WORK/kamailio.log" 2>&1 &
PIDS+=("$!")
kam() { timeout 5 "$KAMCMD" -s "unix:$WORK/kamailio_ctl" "$@"; }
for _ in $(seq 100); do kam core.version > /dev/null 2>&1 && break; sleep 0.1; done
kam core.version > /dev/null 2>&1 || { echo "Kamailio did not start" >&2; tail -20 "$WORK/kamailio.log" >&2; exit 1; }

# Waits (at most 15 s) until Kamailio holds no transaction from the previous run.
kam_settle() {
  for _ in $(seq 150); do
    [ "$(kam tm.stats 2>/dev/null | awk '/current:/ { print $2 }')" = 0 ] && return
    sleep 0.1
  done
}

# Runs one SIPp load: $1 port, $2 scenario, $3 transport (u1/t1), $4 calls, rest extra args. Prints calls/s
# (0 when the run failed, with SIPp's last errors on stderr).
load() {
  local port=$1 scenario=$2 transport=$3 calls=$4; shift 4
  local start end err
  err=$(mktemp -p "$WORK" err.XXXX)
  [ "$port" = $KAM_PORT ] && kam_settle
  start=$(date +%s.%N)
  timeout $((RUN_TIMEOUT + 30)) "${SIPP[@]}" 127.0.0.1:"$port" -sf "$SIPP_DIR/$scenario.xml" -t "$transport" -i 127.0.0.1 \
    -m "$calls" -r 100000 -l 200 -nostdin -timeout $RUN_TIMEOUT -timeout_error -trace_err -error_file "$err" "$@" \
    > /dev/null 2>&1 || {
    echo "FAILED ($scenario $transport on $port):" >&2; tail -c 1500 "$err" >&2 2>/dev/null; echo 0; return; }
  end=$(date +%s.%N)
  echo "$calls $start $end" | awk '{ printf "%.0f", $1 / ($3 - $2) }'
}

rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
best() { printf "%s\n" "$@" | sort -n | tail -1; }
median() { printf "%s\n" "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

# 10,000 distinct users registered over UDP, then the Front End's resident size.
load $FE_PORT bench_register u1 $USERS > /dev/null
RSS_KB=$(rss_kb "$FE_PID")

# MESSAGE recipients: one SIPp server scenario per server and transport, registered as bob<port> with its own port
# as contact (the stock Kamailio relays to the contact address; so does the Front End once the REGISTER's
# connection is closed).
declare -A UAS
port_next=$UAS_PORT
for transport in u1 t1; do
  for target in $FE_PORT $KAM_PORT; do
    port_next=$((port_next + 1))
    "${SIPP[@]}" 127.0.0.1:$target -sf "$SIPP_DIR/message_uas.xml" -t $transport -i 127.0.0.1 -p $port_next -nostdin \
      > /dev/null 2>&1 &
    PIDS+=("$!"); sleep 0.3
    timeout 30 "${SIPP[@]}" 127.0.0.1:$target -sf "$SIPP_DIR/register_contact.xml" -s bob$port_next -key contact_port $port_next \
      -t $transport -i 127.0.0.1 -m 1 -nostdin -timeout 20 -timeout_error > /dev/null 2>&1 ||
      echo "could not register bob$port_next at $target over $transport" >&2
    UAS[$transport.$target]=bob$port_next
  done
done

printf "%-9s %-4s %10s %10s %10s %10s %7s %7s\n" method tr "fe best" "fe median" "kam best" "kam median" "best" "median"
for method in REGISTER MESSAGE; do
  for transport in u1 t1; do
    fe=() km=()
    for _ in $(seq "$ROUNDS"); do
      if [ $method = REGISTER ]; then
        fe+=("$(load $FE_PORT bench_register $transport "$CALLS")")
        km+=("$(load $KAM_PORT bench_register $transport "$CALLS")")
      else
        fe+=("$(load $FE_PORT message_uac $transport "$CALLS" -s "${UAS[$transport.$FE_PORT]}")")
        km+=("$(load $KAM_PORT message_uac $transport "$CALLS" -s "${UAS[$transport.$KAM_PORT]}")")
      fi
    done
    echo "  $method $transport runs: frontend ${fe[*]}; kamailio ${km[*]}" >&2
    fb=$(best "${fe[@]}") fm=$(median "${fe[@]}") kb=$(best "${km[@]}") kmed=$(median "${km[@]}")
    printf "%-9s %-4s %10s %10s %10s %10s %7s %7s\n" $method $transport "$fb" "$fm" "$kb" "$kmed" \
      "$(ratio "$fb" "$kb")" "$(ratio "$fm" "$kmed")"
  done
done
echo "frontend resident size with $USERS registered users: $((RSS_KB / 1024)) MiB ($RSS_KB KiB)"
echo "kamailio shared memory high-water mark: $(kam core.shmmem | awk '/max_used/ { printf "%d MiB", $2 / 1048576 }')"
