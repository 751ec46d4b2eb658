#!/usr/bin/env bash
# The agent's figures for BENCHMARKS.md ("Agent"): `waitstate-agent/bench/agent.sh [memory|load|all]`
#
# memory: idle RSS and CPU of the release agent (tiers and a rule, no control plane) over
#   IDLE seconds; then RSS after FLOOD /gate calls each with a new tag, and after FLOOD
#   /v1/admit calls never finished (adaptive admission off and a long token_ttl, so that the
#   token table, max_tokens = 65,536, is what bounds them).
# load: `POST /gate` over loopback keep-alive against the agent, and `GET /` against
#   examples/overhead bare (the HTTP floor) in the same run, alternating, ROUNDS times:
#   paced at RATE req/s (p50/p99 from the scheduled send time), and as fast as possible
#   (max req/s); the server pinned to SERVER_CPU, the load generator to LOAD_CPU.
# Knobs: IDLE=10 FLOOD=1000000 ROUNDS=3 DURATION=10 RATE=10000 CONNS=32 SERVER_CPU=0 LOAD_CPU=1
set -euo pipefail
WHAT=${1:-all}
IDLE=${IDLE:-10}; FLOOD=${FLOOD:-1000000}; ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10}
RATE=${RATE:-10000}; CONNS=${CONNS:-32}; SERVER_CPU=${SERVER_CPU:-0}; LOAD_CPU=${LOAD_CPU:-1}
cd "$(dirname "$0")/../.."
OUT=target/bench-agent; mkdir -p "$OUT"
cargo build --quiet --release -p waitstate-agent --bin waitstate-agent --example agent-load
AGENT=target/release/waitstate-agent; LOAD=target/release/examples/agent-load
TICK=$(getconf CLK_TCK)
PID=
stop() { if [[ -n $PID ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=; fi; }
trap stop EXIT
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

cat > "$OUT/agent.toml" <<TOML
[tags]
enterprise = 100
pro = 50
free = 10
[[rules]]
rule = "when p95_latency of free > 500ms then block free"
[agent]
listen = "127.0.0.1:7390"
TOML
# The floods: no rule (abandoned tokens end as failures that a latency rule would act on),
# adaptive admission off and a long token_ttl, so that the token table fills and stays full.
printf '[tags]\nenterprise = 100\nfree = 10\n[admission]\nadaptive = false\n[agent]\nlisten = "127.0.0.1:7390"\ntoken_ttl = "600s"\n' > "$OUT/agent-flood.toml"

if [[ $WHAT == memory || $WHAT == all ]]; then
    taskset -c "$SERVER_CPU" "$AGENT" --config "$OUT/agent.toml" 2>/dev/null & PID=$!
    wait_port 7390; sleep 1
    t0=$(cpu_ticks $PID); sleep "$IDLE"; t1=$(cpu_ticks $PID)
    echo "idle: rss_mib=$(rss $PID) cpu_ms_per_s=$(( (t1 - t0) * 1000 / TICK / IDLE ))"
    stop
    taskset -c "$SERVER_CPU" "$AGENT" --config "$OUT/agent-flood.toml" 2>/dev/null & PID=$!
    wait_port 7390; sleep 0.5
    echo "start: rss_mib=$(rss $PID)"
    taskset -c "$LOAD_CPU" "$LOAD" 127.0.0.1:7390 flood-tags "$FLOOD"
    echo "after $FLOOD distinct tags: rss_mib=$(rss $PID)"
    taskset -c "$LOAD_CPU" "$LOAD" 127.0.0.1:7390 flood-tokens "$FLOOD"
    echo "after $FLOOD abandoned tokens: rss_mib=$(rss $PID) status=$(curl -s 127.0.0.1:7390/v1/status)"
    stop
fi

if [[ $WHAT == load || $WHAT == all ]]; then
    cargo build --quiet --release -p waitstate-examples --example overhead
    BARE=target/release/examples/overhead
    for r in $(seq "$ROUNDS"); do
        for peer in agent bare; do
            if [[ $peer == agent ]]; then
                taskset -c "$SERVER_CPU" "$AGENT" --config "$OUT/agent.toml" 2>/dev/null & PID=$!
                args=(--method POST --path /gate --body '{"tag":"free","weight":1.0}')
            else
                taskset -c "$SERVER_CPU" "$BARE" 127.0.0.1:7390 bare >/dev/null 2>&1 & PID=$!
                args=(--method GET --path / --body '')
            fi
            wait_port 7390; sleep 0.5
            paced=$(taskset -c "$LOAD_CPU" "$LOAD" 127.0.0.1:7390 "${args[@]}" --connections "$CONNS" --rate "$RATE" --duration "$DURATION")
            max=$(taskset -c "$LOAD_CPU" "$LOAD" 127.0.0.1:7390 "${args[@]}" --connections "$CONNS" --rate 0 --duration "$DURATION")
            echo "round=$r peer=$peer paced: $paced"
            echo "round=$r peer=$peer max:   $max"
            stop
        done
    done | tee "$OUT/load.txt"
fi
