#!/usr/bin/env bash
# Control plane replicas over Redis: signed pulses per second that two release
# `waitstate-control` replicas over one `redis-server` take, beside one replica in memory
# measured the same way, on this machine.
#
#   bench/replicas.sh
#
# Builds the release binary with the `redis` feature and the pulse generator
# (waitstate-control/benches/pulses.rs). For each setup, starts a fresh Redis (no
# persistence, a temp dir), the replicas (the generator's configuration: 3 tags, 2 fleet
# rules and a fleet-wide rate limit in force, so every answer splits a budget), registers
# every instance once, then drives pulses for DURATION seconds, each instance's pulses
# going to the replicas in turn. Nothing is pinned: the replicas, Redis and the generator
# share the machine's cores, so the figures are what this machine does with all of them
# at once. The CPU time of the replicas and of Redis per pulse (utime+stime from
# /proc/PID/stat over the measured run) tells what each pulse costs where.
# Knobs (environment): INSTANCES=10000 DURATION=10 CONCURRENCY=64 PORT=37800
#   WAITSTATE_REDIS_SERVER (default: redis-server on the PATH) OUT=target/bench-replicas
set -euo pipefail

INSTANCES=${INSTANCES:-10000}
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-64}
PORT=${PORT:-37800}
REDIS=${WAITSTATE_REDIS_SERVER:-$(command -v redis-server || true)}
[[ -x $REDIS ]] || { echo "redis-server not found: apt-get install -y redis-server" >&2; exit 1; }

cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-replicas}
mkdir -p "$OUT"
TICK=$(getconf CLK_TCK)
RPORT=$((PORT + 100))

echo "== building waitstate-control (redis) and the pulse generator (release)" >&2
cargo build --quiet --release -p waitstate-control --features redis --bin waitstate-control
GEN=$(cargo bench --no-run -p waitstate-control --features redis --bench pulses --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*pulses[^"]*"' | tail -1 | cut -d'"' -f4)
[[ -x $GEN ]] || { echo "pulse generator not built" >&2; exit 1; }
SERVER=target/release/waitstate-control

PIDS=()
RDIRS=()
stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    PIDS=()
    for d in "${RDIRS[@]}"; do rm -rf "$d"; done
    RDIRS=()
}
trap stop_all EXIT
wait_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on $1" >&2; return 1
}
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); $("$REDIS" --version | cut -d' ' -f3)"
echo "$INSTANCES instances, $CONCURRENCY pulses in flight, ${DURATION}s, fleet budget in force, nothing pinned"
echo
echo "| setup | pulses/s | p50 (ms) | p99 (ms) | replicas' CPU per pulse (us) | Redis CPU per pulse (us) | refused | errors |"
echo "|---|---|---|---|---|---|---|---|"
for setup in memory-1 redis-2; do
    replicas=${setup#*-}
    redis_opt=()
    redis_pid=
    if [[ $setup == redis-* ]]; then
        rdir=$(mktemp -d)
        RDIRS+=("$rdir")
        "$REDIS" --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$rdir" >"$OUT/redis.log" 2>&1 &
        redis_pid=$!
        PIDS+=("$redis_pid")
        wait_port "$RPORT"
        redis_opt=(--redis "redis://127.0.0.1:$RPORT")
    fi
    urls=()
    server_pids=()
    for r in $(seq 0 $((replicas - 1))); do
        p=$((PORT + r))
        "$GEN" --print-config "${redis_opt[@]}" | sed "s|127.0.0.1:7700|127.0.0.1:$p|" >"$OUT/replica-$r.toml"
        "$SERVER" --config "$OUT/replica-$r.toml" 2>>"$OUT/server-$setup.log" &
        server_pids+=($!)
        PIDS+=($!)
        wait_port "$p"
        urls+=("http://127.0.0.1:$p")
    done
    rm -f "$OUT/ready"
    "$GEN" --url "$(IFS=,; echo "${urls[*]}")" --instances "$INSTANCES" --duration "$DURATION" \
        --concurrency "$CONCURRENCY" --threads 2 --ready-file "$OUT/ready" >"$OUT/pulses-$setup.txt" &
    gen=$!
    while [[ ! -e $OUT/ready ]] && kill -0 "$gen" 2>/dev/null; do sleep 0.01; done
    s0=0; for pid in "${server_pids[@]}"; do s0=$((s0 + $(cpu "$pid"))); done
    r0=0; [[ -n $redis_pid ]] && r0=$(cpu "$redis_pid")
    wait "$gen"
    s1=0; for pid in "${server_pids[@]}"; do s1=$((s1 + $(cpu "$pid"))); done
    r1=0; [[ -n $redis_pid ]] && r1=$(cpu "$redis_pid")
    stop_all
    line=$(cat "$OUT/pulses-$setup.txt")
    get() { sed -E "s/(^|.* )$1=([0-9.]+).*/\2/" <<<"$line"; }
    awk -v s="$setup" -v ps="$(get pulses_per_s)" -v p50="$(get p50_us)" -v p99="$(get p99_us)" \
        -v pulses="$(get pulses)" -v sd=$((s1 - s0)) -v rd=$((r1 - r0)) -v t="$TICK" \
        -v refused="$(get refused)" -v errors="$(get errors)" 'BEGIN {
        name = (s == "memory-1") ? "1 replica, in memory" : "2 replicas over 1 Redis"
        sc = pulses > 0 ? sd / t * 1e6 / pulses : 0
        rc = pulses > 0 ? rd / t * 1e6 / pulses : 0
        printf "| %s | %d | %.2f | %.2f | %.0f | %s | %d | %d |\n", name, ps, p50 / 1000, p99 / 1000, sc, (s == "memory-1") ? "-" : sprintf("%.0f", rc), refused, errors
    }'
done
