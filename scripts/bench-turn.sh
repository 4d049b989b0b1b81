#!/usr/bin/env bash
# Bedside's embedded TURN relay against coturn (Debian's turnserver), side by side in one
# run, driven by coturn's own load client turnutils_uclient at the same message size and
# rates. Method and results: docs/benchmarks.md ("TURN relay against coturn").
#
#   scripts/bench-turn.sh                 # rates 10000 25000 50000 msg/s, 3 repeats
#   BENCH_RATES="50000" BENCH_REPEAT=5 scripts/bench-turn.sh
#
# Both servers listen on loopback only, are pinned to CPU 0 (taskset), the load tool to
# CPU 1; every run is bounded (count and time) and both servers are stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${BENCH_RATES:-"10000 25000 50000"}
REPEAT=${BENCH_REPEAT:-3}
SECONDS_PER_RUN=${BENCH_SECONDS:-8}
SIZE=${BENCH_SIZE:-100}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
SOCKETS=${BENCH_SOCKETS:-"1 2"} # Bedside --turn-udp-sockets variants
SECRET=bench-secret-0123456789abcdef-$$
BEDSIDE_PORT=34780
COTURN_PORT=34790

for tool in turnserver turnutils_uclient taskset; do
  command -v "$tool" >/dev/null || { echo "bench-turn: $tool is missing (make deps installs coturn)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/bedside" ./cmd/bedside
hz=$(getconf CLK_TCK)

# cpu_ticks PID: user+system CPU ticks of a process and its threads.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start_bedside() { # $1: UDP sockets, $2: port
  taskset -c "$SERVER_CPU" "$work/bedside" serve --data-dir "$work/data-$1" --http-addr 127.0.0.1:0 \
    --stun-addr "127.0.0.1:$2" --turn-udp-sockets "$1" --turn-secret "$SECRET" \
    --turn-allow-peers 127.0.0.1 --turn-ttl-max 25h --turn-bandwidth 0 --turn-quota 1000 \
    --turn-quota-total 100000 --turn-tcp=false --turn-ports "$3" --log-level error \
    >"$work/bedside-$1.log" 2>&1 &
  bedside_pid[$1]=$!
  bedside_port[$1]=$2
  pids+=("$!")
  sleep 1
}

start_coturn() {
  taskset -c "$SERVER_CPU" turnserver -n --listening-ip=127.0.0.1 --listening-port="$COTURN_PORT" \
    --relay-ip=127.0.0.1 --min-port=50000 --max-port=65000 --use-auth-secret \
    --static-auth-secret="$SECRET" --realm=bedside --allow-loopback-peers --no-cli --no-tls --no-dtls \
    --no-tcp --no-tcp-relay --no-rfc5780 --no-software-attribute --log-file="$work/coturn.log" \
    --no-stdout-log --simple-log --pidfile="$work/coturn.pid" >/dev/null 2>&1 &
  coturn_pid=$!
  pids+=("$coturn_pid")
  sleep 1
}

# One turnutils_uclient process paces itself at about 6-12k messages/s (its event loop, not
# its CPU: it uses a fraction of a core), so a rate is made of several processes in parallel,
# each with CLIENTS clients (-y: each sends to another's relay address, so every message
# crosses two allocations) sending 1 message per ms at most.
CLIENTS=${BENCH_CLIENTS:-50}
PER_PROCESS=6250
run=0

# load NAME PID PORT RATE: one bounded run; prints a result row.
load() {
  local name=$1 pid=$2 port=$3 rate=$4
  local procs=$(( (rate + PER_PROCESS - 1) / PER_PROCESS ))
  local n=$(( SECONDS_PER_RUN * PER_PROCESS / CLIENTS ))
  local z=1
  if [ "$rate" -lt "$PER_PROCESS" ]; then z=$(( PER_PROCESS / rate )); n=$(( n / z )); fi
  local c0 c1 i
  run=$((run + 1))
  c0=$(cpu_ticks "$pid")
  for i in $(seq "$procs"); do
    taskset -c "$LOAD_CPU" timeout 120 turnutils_uclient -y -c -m "$CLIENTS" -n "$n" -l "$SIZE" -z "$z" \
      -W "$SECRET" -u "bench-$run-$i" -p "$port" 127.0.0.1 >"$work/out.$i" 2>&1 &
  done
  wait $(jobs -p | grep -v -x -F "$(printf '%s\n' "${pids[@]}")" || true) 2>/dev/null || true
  c1=$(cpu_ticks "$pid")
  local sent=0 recv=0 lost=0 tmax=0 rttsum=0 rttn=0 f v
  for i in $(seq "$procs"); do
    f="$work/out.$i"
    v=$( (grep -o 'tot_send_msgs=[0-9]*' "$f" || true) | tail -1 | cut -d= -f2); sent=$((sent + ${v:-0}))
    v=$( (grep -o 'tot_recv_msgs=[0-9]*' "$f" || true) | tail -1 | cut -d= -f2); recv=$((recv + ${v:-0}))
    v=$(sed -n 's/.*Total lost packets \([0-9]*\) .*/\1/p' "$f" | tail -1); lost=$((lost + ${v:-0}))
    v=$(sed -n 's/.*Total transmit time is \([0-9]*\).*/\1/p' "$f" | tail -1)
    if [ "${v:-0}" -gt "$tmax" ]; then tmax=${v:-0}; fi
    v=$(sed -n 's/.*Average round trip delay \([0-9.]*\) ms.*/\1/p' "$f" | tail -1)
    if [ -n "$v" ]; then rttsum=$(awk -v a="$rttsum" -v b="$v" 'BEGIN{print a+b}'); rttn=$((rttn + 1)); fi
  done
  if [ "$sent" -eq 0 ]; then
    echo "bench-turn: $name at $rate msg/s: no totals from turnutils_uclient:" >&2
    tail -5 "$work/out.1" >&2
    return 0
  fi
  for i in $(seq "$procs"); do
    if ! grep -q 'tot_recv_msgs' "$work/out.$i"; then
      echo "bench-turn: $name at $rate msg/s: uclient $i reported nothing: $(tail -2 "$work/out.$i" | tr '\n' ' ')" >&2
    fi
  done
  awk -v name="$name" -v rate="$rate" -v procs="$procs" -v sent="$sent" -v recv="$recv" -v lost="$lost" -v t="$tmax" \
      -v ticks=$((c1 - c0)) -v hz="$hz" -v rttsum="$rttsum" -v rttn="$rttn" 'BEGIN {
    printf "| %-22s | %6d | %d | %8s | %8d | %8d | %.3f%% | %.2f | %.3f |\n", name, rate, procs,
      (t > 0 ? int(sent / t) : "-"), sent, recv, (sent > 0 ? 100 * (sent - recv) / sent : 0),
      (recv > 0 ? ticks / hz * 1e6 / recv : 0), (rttn > 0 ? rttsum / rttn : 0) }'
}

echo "# TURN relay benchmark: $(date -u +%FT%TZ), $(nproc) CPUs, $(uname -r), $(go version | cut -d' ' -f3), $(turnserver --version 2>/dev/null | head -1 || echo coturn)"
echo "# $SIZE-byte messages, $CLIENTS clients per turnutils_uclient process (-y -c), about ${SECONDS_PER_RUN} s per run, server on CPU $SERVER_CPU, load on CPU $LOAD_CPU"
echo
echo "| server | target msg/s | uclient processes | achieved msg/s | sent | received | lost | server CPU us/msg | delay ms |"
echo "|---|---|---|---|---|---|---|---|---|"
declare -A bedside_pid bedside_port
start_coturn
port=$BEDSIDE_PORT
for s in $SOCKETS; do
  # uclient leaves its allocations to expire (10 min): each server gets 15000 relay ports.
  start_bedside "$s" "$port" "$((20000 + (port - BEDSIDE_PORT) * 15000))-$((34999 + (port - BEDSIDE_PORT) * 15000))"
  port=$((port + 1))
done
for rate in $RATES; do
  for _ in $(seq "$REPEAT"); do
    load "coturn" "$coturn_pid" "$COTURN_PORT" "$rate"
    for s in $SOCKETS; do
      load "bedside ($s UDP socket$( [ "$s" = 1 ] || echo s))" "${bedside_pid[$s]}" "${bedside_port[$s]}" "$rate"
    done
  done
done

# The latency one relay hop adds, through each server (an idle server; the client pinned to
# the load CPU): median round trips relayed and direct, see internal/turn/bench_test.go.
echo
echo "Relay hop latency (BenchmarkRelayHop, 20000 round trips of 100 bytes, 3 runs each):"
go test -c -o "$work/turn.test" ./internal/turn
first=${SOCKETS%% *}
for target in "coturn 127.0.0.1:$COTURN_PORT" "bedside 127.0.0.1:${bedside_port[$first]}"; do
  set -- $target
  BEDSIDE_BENCH_TURN_ADDR=$2 BEDSIDE_BENCH_TURN_SECRET=$SECRET taskset -c "$LOAD_CPU" "$work/turn.test" \
    -test.run '^$' -test.bench RelayHop -test.benchtime 20000x -test.count 3 2>&1 | grep '^Benchmark' | sed "s/^/$1: /"
done
