#!/usr/bin/env bash
# The group fan-out figures of BENCHMARKING.md ("Group calls: fan-out"), each RUNS times, as
# JSON in OUT, then tables of medians: 1 transmitter to 10 and to 50 receivers (floor and relay
# in one invocation), and the 1:1 reference at the same delivered rates, end_to_end and per_leg
# SRTP (AEAD_AES_128_GCM), paced, 1200 B, in-process engine with 1 worker.
#   benches/scripts/loadgen-group.sh [OUT] [RUNS]
# Environment: DUR (measured seconds, default 8), NICE (default 10), G10 / G50 (packets/s sent
# to the groups of 10 / 50, default 2000 / 1000).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-/tmp/loadgen-group}"
RUNS="${2:-3}"
DUR="${DUR:-8}"
NICE="${NICE:-10}"
G10="${G10:-2000}"
G50="${G50:-1000}"
R=target/release/mcvideo-relay
cargo build --release --quiet --features loadgen
mkdir -p "$OUT"
lg() {
  nice -n "$NICE" "$R" loadgen --engine --workers 1 --quiet --duration "$DUR" "$@" 2>/dev/null >/dev/null \
    || echo "failed (exit $?): $*"
}
for i in $(seq 1 "$RUNS"); do
  for sec in end_to_end per_leg; do
    lg --group-receivers 10 --rate "$G10" --security "$sec" --json "$OUT/g10-$sec-$i.json"
    lg --group-receivers 50 --rate "$G50" --security "$sec" --json "$OUT/g50-$sec-$i.json"
    # 1:1 at the groups' delivered rates: 100 calls, paced.
    lg --calls 100 --pattern paced --rate $((G10 * 10)) --security "$sec" --no-floor --json "$OUT/one-$((G10 * 10))-$sec-$i.json"
    lg --calls 100 --pattern paced --rate $((G50 * 50)) --security "$sec" --no-floor --json "$OUT/one-$((G50 * 50))-$sec-$i.json"
  done
done
python3 - "$OUT" "$RUNS" "$G10" "$G50" <<'PY'
import json, statistics, sys
out, runs, g10, g50 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def load(name):
    rs = []
    for i in range(1, runs + 1):
        try:
            rs.append(json.load(open(f"{out}/{name}-{i}.json"))["runs"][0])
        except Exception as e:
            print(f"{name}-{i}: {e}")
    return rs
med = lambda xs: statistics.median(xs) if xs else float("nan")
runs_of = lambda xs, d=2: ", ".join(f"{x:.{d}f}" for x in xs)
print("| load | security | sent pps | delivered pps | relay µs / delivered | floor sender µs / delivered | 1:1 relay µs / packet at the same delivered rate | **group ÷ 1:1** | last receiver p50 / p99.9 µs (floor) | added to the last receiver p50 / p99.9 µs | lost relay / floor |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for n, rate in [(10, g10), (50, g50)]:
    for sec in ["end_to_end", "per_leg"]:
        rs = load(f"g{n}-{sec}")
        ones = load(f"one-{rate * n}-{sec}")
        rl = [r["relay"]["relay_cpu_us_per_packet"] for r in rs]
        fl = [r["floor"]["fanout_cpu_us_per_delivered"] for r in rs]
        one = [r["relay"]["relay_cpu_us_per_packet"] for r in ones]
        ratio = med(rl) / med(one) if one else float("nan")
        sent = [r["relay"]["achieved_pps"] for r in rs]
        dlv = [r["relay"]["received_pps"] for r in rs]
        last = [r["relay"]["last_receiver_latency_us"] for r in rs]
        flast = [r["floor"]["last_receiver_latency_us"] for r in rs]
        add = [r["added_last_receiver_latency_us"] for r in rs]
        lost = (sum(r["relay"]["lost"] for r in rs), sum(r["floor"]["lost"] for r in rs))
        print(f"| 1 → {n} | {sec} | {med(sent):.0f} | {med(dlv):.0f} | **{med(rl):.2f}** ({runs_of(rl)}) | {med(fl):.2f} ({runs_of(fl)}) | {med(one):.2f} ({runs_of(one)}) | **{ratio:.2f}** | {med([l['p50'] for l in last]):.0f} / {med([l['p99_9'] for l in last]):.0f} ({med([l['p50'] for l in flast]):.0f} / {med([l['p99_9'] for l in flast]):.0f}) | {med([a['p50'] for a in add]):+.0f} / {med([a['p99_9'] for a in add]):+.0f} | {lost[0]} / {lost[1]} |")
print()
print("| 1:1 reference (100 calls, paced, relay only) | security | relay µs / packet (median; runs) | p50 / p99.9 µs | lost |")
print("|---|---|---|---|---|")
for rate in sorted({g10 * 10, g50 * 50}):
    for sec in ["end_to_end", "per_leg"]:
        rs = load(f"one-{rate}-{sec}")
        c = [r["relay"]["relay_cpu_us_per_packet"] for r in rs]
        lat = [r["relay"]["latency_us"] for r in rs]
        print(f"| {rate} pps | {sec} | {med(c):.2f} ({runs_of(c)}) | {med([l['p50'] for l in lat]):.0f} / {med([l['p99_9'] for l in lat]):.0f} | {sum(r['relay']['lost'] for r in rs)} |")
PY
