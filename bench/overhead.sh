#!/usr/bin/env bash
# End-to-end overhead of the middleware, side by side with its peers, in one run.
#
#   bench/overhead.sh [throughput|memory|instructions|all]        (default: all)
#
# throughput: builds `examples/overhead` in release, then for ROUNDS rounds runs each mode
#   (bare, gate, gate-lean (no Admission extension), governor, concurrency, and bare a
#   second time to measure the noise) in a
#   shuffled order: the server pinned to SERVER_CPU, the load generator to LOAD_CPU, on
#   127.0.0.1. Per mode: median requests/s, the median of the per-round ratios to bare,
#   median p99, and the server's CPU time per request (utime+stime from /proc/PID/stat
#   over the measured run, divided by the requests served), with its per-round ratio.
# instructions: each server under valgrind's callgrind, counting the instructions it runs
#   in user space for REQUESTS requests (after 2,000 unmeasured), per request: the same
#   figure on a busy or a quiet machine (the kernel's share, loopback TCP, is not counted,
#   so the ratio is larger than the CPU ratio; read it beside the `concurrency` peer's).
#   Installs valgrind with apt-get when missing and root. Not part of `all` (~2 min a mode).
# memory: RSS (VmRSS) of the `gate` server after 256 distinct tags, then after a flood of
#   FLOOD distinct tags (one per request), and again after a second flood; the `bare` server
#   under the same traffic for reference.
#
# Load generator: `wrk` (Debian package; installed with apt-get when missing and we are
# root), else our own (`overhead load`, HTTP/1.1 keep-alive). LOADGEN=ours forces ours.
# Knobs (environment): ROUNDS=5 DURATION=10 WARMUP=2 CONNS=64 SERVER_CPU=0 LOAD_CPU=1
#   PORT=38080 FLOOD=1000000 OUT=target/bench-overhead
set -euo pipefail

WHAT=${1:-all}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-38080}
FLOOD=${FLOOD:-1000000}
LOADGEN=${LOADGEN:-auto}
REQUESTS=${REQUESTS:-20000}

cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-overhead}
mkdir -p "$OUT"
ADDR=127.0.0.1:$PORT
TICK=$(getconf CLK_TCK)

echo "== building examples/overhead (release)" >&2
cargo build --quiet --release -p waitstate-examples --example overhead
BIN=target/release/examples/overhead

if [[ $LOADGEN == auto ]]; then
    if ! command -v wrk >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "== installing wrk (apt-get)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1; } \
            || true
    fi
    if command -v wrk >/dev/null 2>&1; then LOADGEN=wrk; else LOADGEN=ours; fi
fi

SERVER_PID=
stop_server() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
trap stop_server EXIT

start_server() { # mode
    taskset -c "$SERVER_CPU" "$BIN" "$ADDR" "$1" 2>>"$OUT/server.log" &
    SERVER_PID=$!
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "server ($1) did not start; see $OUT/server.log" >&2
    exit 1
}

cpu_ticks() { # utime + stime of the server, in clock ticks
    awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status"
}

# One load run against the server; prints "requests rps p99_us non2xx".
load() { # seconds
    if [[ $LOADGEN == wrk ]]; then
        taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${1}s" --latency \
            -H 'x-waitstate-tag: pro' "http://$ADDR/" >"$OUT/last-load.txt"
        awk '
            function us(v) {
                if (v ~ /us$/) { sub(/us$/, "", v); return v }
                if (v ~ /ms$/) { sub(/ms$/, "", v); return v * 1000 }
                if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000000 }
                return v
            }
            / requests in / { req = $1 }
            /^Requests\/sec:/ { rps = $2 }
            $1 == "99%" { p99 = us($2) }
            /Non-2xx/ { bad = $NF }
            END { printf "%d %.0f %.0f %d\n", req, rps, p99, bad }
        ' "$OUT/last-load.txt"
    else
        taskset -c "$LOAD_CPU" "$BIN" load "$ADDR" --connections "$CONNS" --duration "$1" \
            --tag pro >"$OUT/last-load.txt"
        sed -E 's/.*requests=([0-9]+).* rps=([0-9.]+) .*p99_us=([0-9]+) non_2xx=([0-9]+).*/\1 \2 \3 \4/' \
            "$OUT/last-load.txt"
    fi
}

machine() {
    echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "load generator: $LOADGEN, $CONNS connections, ${DURATION}s per run (+${WARMUP}s warm-up), server on cpu $SERVER_CPU, load on cpu $LOAD_CPU"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}

throughput() {
    local runs="$OUT/runs.tsv" modes=(bare gate gate-lean governor concurrency bare2)
    printf 'round\tmode\trequests\trps\tp99_us\tnon2xx\tcpu_us_per_req\n' >"$runs"
    machine
    for round in $(seq 1 "$ROUNDS"); do
        for mode in $(printf '%s\n' "${modes[@]}" | shuf); do
            start_server "${mode%2}"
            load "$WARMUP" >/dev/null
            local t0 t1 r
            t0=$(cpu_ticks)
            r=$(load "$DURATION")
            t1=$(cpu_ticks)
            stop_server
            read -r req rps p99 bad <<<"$r"
            local cpu
            cpu=$(awk -v d=$((t1 - t0)) -v t="$TICK" -v n="$req" 'BEGIN { printf "%.3f", n ? d / t / n * 1e6 : 0 }')
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$mode" "$req" "$rps" "$p99" "$bad" "$cpu" >>"$runs"
            echo "round $round $mode: $rps req/s, p99 ${p99}us, ${cpu}us CPU/req, non-2xx $bad" >&2
        done
    done
    echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    summarize "$runs"
}

summarize() {
    awk -F'\t' '
        function median(a, n,   i, j, t) {
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        NR > 1 { rps[$2, $1] = $4; p99[$2, $1] = $5; cpu[$2, $1] = $7; rounds[$1] = 1; seen[$2] = 1 }
        END {
            printf "| mode | req/s (median) | ratio to bare | p99 (us) | CPU us/req | CPU ratio to bare |\n"
            printf "|---|---|---|---|---|---|\n"
            split("bare bare2 gate gate-lean governor concurrency", order, " ")
            for (k = 1; k <= 6; k++) {
                m = order[k]; if (!(m in seen)) continue
                n = 0
                for (r in rounds) {
                    n++
                    a[n] = rps[m, r]; b[n] = rps[m, r] / rps["bare", r]
                    c[n] = p99[m, r]; d[n] = cpu[m, r]; e[n] = cpu[m, r] / cpu["bare", r]
                }
                name = (m == "bare2") ? "bare (again: the noise)" : m
                printf "| %s | %.0f | %.3f | %.0f | %.2f | %.3f |\n", name, median(a, n), median(b, n), median(c, n), median(d, n), median(e, n)
            }
        }
    ' "$1"
}

memory() {
    local flood_rps
    echo
    echo "| server | after 256 tags (KiB) | after ${FLOOD} distinct tags (KiB) | after 2x${FLOOD} (KiB) |"
    echo "|---|---|---|---|"
    for mode in gate bare; do
        start_server "$mode"
        taskset -c "$LOAD_CPU" "$BIN" load "$ADDR" --connections 16 --requests 25600 --tags 256 >/dev/null
        local a b c
        a=$(rss_kib)
        taskset -c "$LOAD_CPU" "$BIN" load "$ADDR" --connections 64 --requests "$FLOOD" --distinct-tags >"$OUT/flood.txt"
        b=$(rss_kib)
        taskset -c "$LOAD_CPU" "$BIN" load "$ADDR" --connections 64 --requests "$FLOOD" --distinct-tags >"$OUT/flood.txt"
        c=$(rss_kib)
        flood_rps=$(sed -E 's/.* rps=([0-9.]+) .*/\1/' "$OUT/flood.txt")
        stop_server
        echo "| $mode | $a | $b | $c |"
        echo "$mode flood: $flood_rps req/s" >&2
    done
}

instructions() {
    if ! command -v valgrind >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "== installing valgrind (apt-get)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null 2>&1; }
    fi
    command -v callgrind_control >/dev/null || { echo "instructions: needs valgrind" >&2; exit 1; }
    echo "user-space instructions per request (callgrind), $REQUESTS requests over 8 keep-alive connections, tag pro"
    echo
    echo "| mode | instructions per request | ratio to bare | over bare |"
    echo "|---|---|---|---|"
    local bare=
    for mode in bare gate governor concurrency; do
        valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$mode" --instr-atstart=no \
            "$BIN" "$ADDR" "$mode" 2>>"$OUT/server.log" &
        SERVER_PID=$!
        for _ in $(seq 1 400); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
            sleep 0.05
        done
        "$BIN" load "$ADDR" --connections 8 --requests 2000 --tag pro >/dev/null
        callgrind_control -i on "$SERVER_PID" >/dev/null
        "$BIN" load "$ADDR" --connections 8 --requests "$REQUESTS" --tag pro >/dev/null
        callgrind_control -i off "$SERVER_PID" >/dev/null
        stop_server
        local total per
        total=$(callgrind_annotate "$OUT/callgrind.$mode" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t { gsub(",", "", $1); t = $1 } END { print t }')
        per=$(awk -v t="$total" -v n="$REQUESTS" 'BEGIN { printf "%.0f", t / n }')
        if [[ -z $bare ]]; then bare=$per; fi
        awk -v m="$mode" -v p="$per" -v b="$bare" 'BEGIN { printf "| %s | %d | %.3f | %+d |\n", m, p, p / b, p - b }'
    done
    echo
    echo "per function: callgrind_annotate $OUT/callgrind.gate (raw files in $OUT)"
}

case $WHAT in
    throughput) throughput ;;
    memory) memory ;;
    instructions) instructions ;;
    all) throughput; memory ;;
    *) echo "usage: $0 [throughput|memory|instructions|all]" >&2; exit 2 ;;
esac
