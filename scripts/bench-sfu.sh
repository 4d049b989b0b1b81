#!/usr/bin/env bash
# The SFU under load: `bedside bench` for one publisher to 10 and to 100 subscribers, and
# for rooms of 4 at increasing counts, each run with the bare UDP relay (the floor) measured
# the same way in the same run. Method and results: docs/benchmarks.md ("SFU forwarding").
#
#   scripts/bench-sfu.sh                                  # 3 repeats of 20 s each
#   BENCH_FANOUT="10" BENCH_ROOMS="" BENCH_REPEAT=5 scripts/bench-sfu.sh
#
# Publishers send the camera in three simulcast layers, as browsers do (BENCH_SIMULCAST=0:
# the top layer alone). BENCH_SERVER_ENV holds environment variables for the server only,
# e.g. BENCH_SERVER_ENV="GOGC=200". An empty BENCH_FANOUT or BENCH_ROOMS skips that scenario.
# BENCH_SRTP_FLOOR=1 measures the SRTP floor too (the relay with SRTP, `--srtp-floor`).
#
# bedside bench starts and stops its own server and floor relay (loopback only, temporary
# data directory), pins them to CPU 0 and itself to CPU 1 (BENCH_SERVER_CPUS,
# BENCH_LOAD_CPUS). Results go to BENCH_OUT (a new directory under /tmp by default): one
# .txt (the summary table) and one .json per scenario.
set -euo pipefail
cd "$(dirname "$0")/.."

REPEAT=${BENCH_REPEAT:-3}
DURATION=${BENCH_DURATION:-20s}
WARMUP=${BENCH_WARMUP:-10s}
FANOUT=${BENCH_FANOUT-"10 100 200 300"}
ROOMS=${BENCH_ROOMS-"5 10 15 20 25 30"}
SERVER_CPUS=${BENCH_SERVER_CPUS:-0}
LOAD_CPUS=${BENCH_LOAD_CPUS:-1}
SIMULCAST=${BENCH_SIMULCAST:-1}
SERVER_ENV=${BENCH_SERVER_ENV:-}
SRTP_FLOOR=${BENCH_SRTP_FLOOR:-0}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/bench-sfu-XXXXXX)}
mkdir -p "$OUT"

go build -o "$OUT/bedside" ./cmd/bedside
common=(--repeat "$REPEAT" --duration "$DURATION" --warmup "$WARMUP" --server-cpus "$SERVER_CPUS" --load-cpus "$LOAD_CPUS")
if [ "$SIMULCAST" = 1 ]; then
  common+=(--simulcast)
fi
if [ "$SRTP_FLOOR" = 1 ]; then
  common+=(--srtp-floor)
fi
for kv in $SERVER_ENV; do
  common+=(--server-env "$kv")
done

run() { # name, bench options...
  local name=$1
  shift
  echo "== $name: bedside bench $* ${common[*]}"
  if "$OUT/bedside" bench "$@" "${common[@]}" --json-out "$OUT/$name.json" >"$OUT/$name.txt" 2>"$OUT/$name.log"; then
    cat "$OUT/$name.txt"
  else
    echo "(failed: $(tail -n 1 "$OUT/$name.log"))" | tee -a "$OUT/$name.txt"
  fi
  echo
}

echo "# $(date -u +%FT%TZ), $(nproc) CPUs, $(uname -r), $(go version | cut -d' ' -f3), commit $(git rev-parse --short HEAD)"
for n in $FANOUT; do
  run "fanout-$n" --scenario fanout --subscribers "$n"
done
for r in $ROOMS; do
  run "rooms-$r" --scenario rooms --rooms "$r" --size 4
done
echo "results in $OUT"
