#!/usr/bin/env bash
# Control plane throughput: signed pulses per second that `waitstate-control` takes from
# 1,000 and 10,000 simulated instances, its pulse latency, and its CPU time per pulse.
#
#   bench/control.sh
#
# Builds the release `waitstate-control` binary and the pulse generator
# (waitstate-control/benches/pulses.rs). For each fleet size, starts a fresh control plane
# (the generator's configuration: 3 tags, 2 fleet rules, and then with and without a
# third, a fleet-wide rate limit in force, so that every answer splits a budget by demand) pinned to SERVER_CPU, registers every instance once, then
# drives pulses for DURATION seconds from the generator pinned to LOAD_CPU. The server's
# utime+stime over the measured run (from /proc/PID/stat) gives its CPU time per pulse,
# hence what it would sustain on 2 whole cores without the generator beside it.
# Knobs (environment): INSTANCES="1000 10000" DURATION=10 CONCURRENCY=32 SERVER_CPU=0
#   LOAD_CPU=1 PORT=37700 OUT=target/bench-control
set -euo pipefail

INSTANCES=${INSTANCES:-"1000 10000"}
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-32}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-37700}

cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-control}
mkdir -p "$OUT"
TICK=$(getconf CLK_TCK)

echo "== building waitstate-control and the pulse generator (release)" >&2
cargo build --quiet --release -p waitstate-control --bin waitstate-control
GEN=$(cargo bench --no-run -p waitstate-control --bench pulses --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*pulses[^"]*"' | tail -1 | cut -d'"' -f4)
[[ -x $GEN ]] || { echo "pulse generator not built" >&2; exit 1; }
SERVER=target/release/waitstate-control

"$GEN" --print-config | sed "s|127.0.0.1:7700|127.0.0.1:$PORT|" >"$OUT/control-budget.toml"
"$GEN" --print-config --no-budget | sed "s|127.0.0.1:7700|127.0.0.1:$PORT|" >"$OUT/control-no-budget.toml"

SERVER_PID=
stop_server() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
trap stop_server EXIT

echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "server on cpu $SERVER_CPU, generator on cpu $LOAD_CPU, $CONCURRENCY pulses in flight, ${DURATION}s per fleet size"
echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| instances | fleet budget | pulses/s (server on 1 core) | p50 (ms) | p99 (ms) | server CPU per pulse (us) | pulses/s on 2 cores at that cost | refused | errors |"
echo "|---|---|---|---|---|---|---|---|---|"
for n in $INSTANCES; do
for budget in budget no-budget; do
    taskset -c "$SERVER_CPU" "$SERVER" --config "$OUT/control-$budget.toml" 2>>"$OUT/server.log" &
    SERVER_PID=$!
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
        sleep 0.05
    done
    # The generator registers every instance first, then measures; the server's CPU is
    # read around the measured part by sampling just after registration ends.
    rm -f "$OUT/ready"
    taskset -c "$LOAD_CPU" "$GEN" --url "http://127.0.0.1:$PORT" --instances "$n" \
        --duration "$DURATION" --concurrency "$CONCURRENCY" --ready-file "$OUT/ready" >"$OUT/pulses-$n.txt" &
    GEN_PID=$!
    while [[ ! -e $OUT/ready ]] && kill -0 "$GEN_PID" 2>/dev/null; do sleep 0.01; done
    t0=$(awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat")
    wait "$GEN_PID"
    t1=$(awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat")
    stop_server
    line=$(cat "$OUT/pulses-$n.txt")
    get() { sed -E "s/(^|.* )$1=([0-9.]+).*/\2/" <<<"$line"; }
    pulses=$(get pulses) ps=$(get pulses_per_s) p50=$(get p50_us) p99=$(get p99_us)
    refused=$(get refused) errors=$(get errors)
    awk -v n="$n" -v b="$budget" -v ps="$ps" -v p50="$p50" -v p99="$p99" -v d=$((t1 - t0)) -v t="$TICK" \
        -v pulses="$pulses" -v refused="$refused" -v errors="$errors" 'BEGIN {
            cpu = pulses ? d / t / pulses * 1e6 : 0
            printf "| %d | %s | %.0f | %.2f | %.2f | %.1f | %.0f | %d | %d |\n", n, (b == "budget" ? "limit free to 1000/s" : "none"), ps, p50 / 1000, p99 / 1000, cpu, cpu ? 2e6 / cpu : 0, refused, errors
        }'
done
done
echo
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
