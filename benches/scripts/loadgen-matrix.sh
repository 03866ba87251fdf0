#!/usr/bin/env bash
# The load figures of BENCHMARKING.md ("One-to-one forwarding: paced senders against the
# minimal forwarder"), each RUNS times, as JSON in OUT, then a table of medians. Release
# build, nothing else running.
#   benches/scripts/loadgen-matrix.sh [OUT] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-/tmp/loadgen-matrix}"
RUNS="${2:-3}"
DUR="${DUR:-8}"
R=target/release/mcvideo-relay
cargo build --release --quiet --features loadgen
mkdir -p "$OUT"
lg() {
  "$R" loadgen --spawn-relay --quiet --duration "$DUR" --ports 20000-29999 "$@" 2>/dev/null >/dev/null \
    || echo "failed (exit $?): $*"
  sleep 1 # the spawned relay's sockets close before the next one binds the range
}
for i in $(seq 1 "$RUNS"); do
  lg --compare-forwarder --pattern paced --calls 100 --rate 20000 --json "$OUT/paced-100-20k-$i.json"
  lg --compare-forwarder --pattern paced --calls 100 --rate 50000 --json "$OUT/paced-100-50k-$i.json"
  lg --compare-forwarder --pattern paced --calls 1000 --rate 50000 --json "$OUT/paced-1000-50k-$i.json"
  lg --no-floor --pattern paced --calls 100 --rate 50000 --srtp per_leg --json "$OUT/paced-100-50k-perleg-$i.json"
  lg --no-floor --pattern paced --calls 100 --rate 50000 --json "$OUT/paced-100-50k-plain-$i.json"
  lg --no-floor --calls 100 --rate 50000 --no-gso --json "$OUT/burst-nogso-50k-$i.json"
  lg --no-floor --calls 100 --rate 50000 --json "$OUT/burst-gso-50k-$i.json"
done
python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def load(name):
    rs = []
    for i in range(1, runs + 1):
        try:
            rs.append(json.load(open(f"{out}/{name}-{i}.json"))["runs"][0])
        except Exception as e:
            print(f"{name}-{i}: {e}")
    return rs
med = lambda xs: statistics.median(xs) if xs else float("nan")
print("| load | forwarder µs/pkt | relay µs/pkt | relay ÷ forwarder | added p50 / p99.9 µs forwarder | added p50 / p99.9 µs relay | lost fwd / relay |")
print("|---|---|---|---|---|---|---|")
for name, label in [("paced-100-20k", "paced, 100 calls, 20k pps"), ("paced-100-50k", "paced, 100 calls, 50k pps"), ("paced-1000-50k", "paced, 1,000 calls, 50k pps")]:
    rs = load(name)
    f = [r["forwarder"]["relay_cpu_us_per_packet"] for r in rs]
    rl = [r["relay"]["relay_cpu_us_per_packet"] for r in rs]
    ratio = [r["relay_vs_forwarder"]["cpu_ratio"] for r in rs]
    fa = [r["forwarder_added_latency_us"] for r in rs]
    ra = [r["added_latency_us"] for r in rs]
    lost = (sum(r["forwarder"]["lost"] for r in rs), sum(r["relay"]["lost"] for r in rs))
    print(f"| {label} | {med(f):.2f} ({', '.join(f'{x:.2f}' for x in f)}) | {med(rl):.2f} ({', '.join(f'{x:.2f}' for x in rl)}) | **{med(ratio):.2f}** ({', '.join(f'{x:.2f}' for x in ratio)}) | {med([a['p50'] for a in fa]):+.1f} / {med([a['p99_9'] for a in fa]):+.1f} | {med([a['p50'] for a in ra]):+.1f} / {med([a['p99_9'] for a in ra]):+.1f} | {lost[0]} / {lost[1]} |")
print()
print("| load (relay only) | relay µs/pkt (median; runs) | lost |")
print("|---|---|---|")
for name, label in [("paced-100-50k-plain", "paced 50k, plain RTP"), ("paced-100-50k-perleg", "paced 50k, per_leg AEAD_AES_128_GCM"), ("burst-nogso-50k", "frame bursts 50k, one sendmsg per packet"), ("burst-gso-50k", "frame bursts 50k, GSO")]:
    rs = load(name)
    c = [r["relay"]["relay_cpu_us_per_packet"] for r in rs]
    print(f"| {label} | {med(c):.2f} ({', '.join(f'{x:.2f}' for x in c)}) | {sum(r['relay']['lost'] for r in rs)} |")
PY
