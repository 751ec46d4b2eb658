#!/usr/bin/env bash
# The hot-path micro benchmarks (criterion, waitstate-core/benches/decide.rs), short, and
# the same-run ratios that matter:
#   decide:   each line / the floor (ArcSwap load + HashMap<&str,_> get + relaxed fetch_add)
#   admit:    each line / waitstate 0.1 `gate` + `report_latency`
#   2threads: each line / the same call on 1 thread (1.00 = perfect scaling)
#
#   bench/micro.sh [criterion filter]     e.g. bench/micro.sh decide/16tags
#
# Knobs (environment): WARMUP=1 MEASURE=2 OUT=target/bench-micro
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-micro}
mkdir -p "$OUT"
echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench -p waitstate-core --bench decide -- \
    --warm-up-time "${WARMUP:-1}" --measurement-time "${MEASURE:-2}" "$@" \
    2>&1 | tee "$OUT/criterion.txt" >&2
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
grep -A20 '^allocations per call' "$OUT/criterion.txt" | sed -n '1,/^[^ a]/p' | grep -v '^[^ a]' || true
echo
awk '
    function ns(v, u) { return u == "ps" ? v / 1000 : u == "ns" ? v : u == "µs" || u == "us" ? v * 1000 : u == "ms" ? v * 1e6 : v * 1e9 }
    /^[^ ]/ && !/time:/ && !/^(Benchmarking|Found|allocations|Gnuplot|  )/ { name = $1 }
    /time:/ {
        if ($1 != "time:") name = $1
        for (i = 1; i <= NF; i++) if ($i == "time:") { v = $(i + 3); u = $(i + 4) }
        t[name] = ns(v, u); order[++n] = name
    }
    END {
        printf "| benchmark | time (ns) | ratio | to |\n|---|---|---|---|\n"
        for (k = 1; k <= n; k++) {
            b = order[k]; split(b, p, "/"); g = p[1]; tags = p[2]
            rest = substr(b, length(g) + length(tags) + 3)
            ref = ""
            if (g == "decide") { ref = "decide/" tags "/floor" }
            else if (g == "admit") { ref = "admit/" tags "/v1-gate+report" }
            else if (g == "2threads") {
                if (rest == "engine-decide/open") ref = "decide/" tags "/engine/open"
                else if (rest == "engine-admit/open") ref = "admit/" tags "/engine/open"
                else if (rest == "engine-admit/concurrency") ref = "admit/" tags "/engine/concurrency"
                else if (rest == "runtime-admit/open") ref = "admit/" tags "/runtime/open"
                else if (rest == "floor" || rest == "governor") ref = "decide/" tags "/" rest
                else ref = "admit/" tags "/" rest
            }
            r = (ref in t && t[ref] > 0) ? sprintf("%.2f", t[b] / t[ref]) : "-"
            printf "| %s | %.1f | %s | %s |\n", b, t[b], r, ref
        }
    }
' "$OUT/criterion.txt"
