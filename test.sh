#!/usr/bin/env bash
# Every check and test of mcvideo-relay in one command, on a machine with only the Rust
# toolchain: installs what the tests need when it is missing (ffmpeg/ffprobe, promtool,
# redis-server, iproute2, arping, clang from Debian packages, cargo-nextest and cargo-fuzz with
# `cargo install`), then
# checks format and lints, that each feature set builds alone (the sans-IO core without tokio),
# the docs, the Prometheus alert rules (HA ones included; tests/deploy_monitoring.rs checks
# their metrics against relays with HA on) and a live /metrics page, smoke-runs every fuzz target,
# runs the doc tests and then the test suite.
# The test runner's summary line is the last line. `.ci/run` is this script.
#
#   ./test.sh            everything (2 cores: about 6 min once built; a cold build adds its time)
#   ./test.sh --deps     only install what is missing
#
# Environment: FUZZ_SECS (per fuzz target, default 15), TEST_SH_DRY_RUN=1 (print the install
# commands instead of running them). Run it niced on a shared machine: `nice -n 10 ./test.sh`.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR=never
FUZZ_SECS="${FUZZ_SECS:-15}"
# A build from a clean clone gains nothing from incremental state, which took 2.7 GB of CI's
# target directory (with the line-tables-only dev profile in Cargo.toml, the disk a run needs
# went from about 15 GB to the figure in docs/testing.md).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

run_install() {
  if [[ "${TEST_SH_DRY_RUN:-}" == 1 ]]; then
    echo "would run: $*"
  else
    "$@"
  fi
}

sudo_if_needed() {
  if [[ "$(id -u)" -eq 0 ]]; then
    run_install "$@"
  elif command -v sudo >/dev/null; then
    run_install sudo "$@"
  else
    echo "test.sh: need root (or sudo) to run: $*" >&2
    exit 1
  fi
}

# --- what the tests need --------------------------------------------------------------------
echo "== dependencies"
apt_pkgs=()
# The interop tests use real ffmpeg peers (docs/testing.md).
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  apt_pkgs+=(ffmpeg)
fi
# promtool checks deploy/prometheus-alerts.rules.yml and the live /metrics page.
command -v promtool >/dev/null || apt_pkgs+=(prometheus)
# SIP peers for tests/sip_kamailio.rs: Kamailio (with its rtpengine module) and SIPp.
command -v kamailio >/dev/null || apt_pkgs+=(kamailio)
command -v sipp >/dev/null || apt_pkgs+=(sip-tester)
# tests/ha_store.rs starts its own redis-server on a free port (the package's service is not used);
# tests/ha_sentinel.rs runs the same binary as Redis Sentinel (`redis-server FILE --sentinel`).
command -v redis-server >/dev/null || apt_pkgs+=(redis-server)
# tests/ha_netns.rs moves the media address between network namespaces (as root): ip, arping.
command -v ip >/dev/null || apt_pkgs+=(iproute2)
command -v arping >/dev/null || apt_pkgs+=(iputils-arping)
# The rediss:// test makes its CA and certificates with the openssl command.
command -v openssl >/dev/null || apt_pkgs+=(openssl)
# crates/fastpath builds its BPF program (bpf/fastpath.bpf.c) with `clang -target bpf`; its
# tests load it as root in namespaces of their own (docs/kernel-fast-path.md).
command -v clang >/dev/null || apt_pkgs+=(clang)
# tests/webrtc_whep.rs watches calls in a real browser: Debian's Chromium, headless (its H.264
# comes with it: libopenh264 and ffmpeg's decoder).
command -v chromium >/dev/null || apt_pkgs+=(chromium)
if ((${#apt_pkgs[@]})); then
  echo "installing ${apt_pkgs[*]} (apt-get)"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}"
fi
if ! command -v cargo-nextest >/dev/null; then
  echo "installing cargo-nextest (cargo install)"
  run_install cargo install cargo-nextest --locked
fi
if ! command -v cargo-fuzz >/dev/null || ! cargo fuzz --version 2>/dev/null | grep -q ' 0\.13\.'; then
  echo "installing cargo-fuzz 0.13.2 (cargo install)"
  run_install cargo install cargo-fuzz --version 0.13.2 --locked
fi
if [[ "${TEST_SH_DRY_RUN:-}" == 1 ]]; then
  echo "dry run: nothing installed, nothing run"
  exit 0
fi
for tool in ffmpeg ffprobe promtool kamailio sipp redis-server ip arping openssl clang chromium cargo-nextest cargo-fuzz; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is still not on PATH" >&2; exit 1; }
done
echo "ffmpeg, ffprobe, promtool, kamailio, sipp, redis-server, ip, arping, openssl, clang, chromium, cargo-nextest, cargo-fuzz: present"
if [[ "${1:-}" == "--deps" ]]; then
  exit 0
fi

# --- static checks --------------------------------------------------------------------------
echo "== fmt, clippy, each feature set alone (README \"Feature sets\"), docs"
# Here clang is installed: a fast-path crate without its BPF program would be a silent hole.
export FASTPATH_REQUIRE_BPF=1
cargo fmt --all -- --check
# The load generator is not a default feature; every build below turns it on (one build of the
# crate for clippy, the binary and the tests), and a plain `cargo check --all-targets` shows the
# default set still builds every target that does not need it. `--workspace`: the relay and the
# kernel fast path's loader (crates/fastpath).
# The relay's tests and binary also carry the kernel fast path (feature kernel-offload, not in
# `default` either: docs/kernel-fast-path.md), and WHEP viewers (feature webrtc: docs/webrtc.md).
FEATURES=mcvideo-relay/loadgen,mcvideo-relay/kernel-offload,mcvideo-relay/webrtc
cargo clippy --workspace --all-targets --features "$FEATURES" -- -D warnings
cargo check --quiet --all-targets
# The fast-path crate on a machine without clang: it still builds (FastPath::open says NotBuilt).
echo "cargo check -p mcvideo-relay-fastpath without clang"
if ! out="$(FASTPATH_REQUIRE_BPF=0 FASTPATH_CLANG=/nonexistent/clang \
  cargo check --quiet -p mcvideo-relay-fastpath --all-targets 2>&1)"; then
  echo "$out"
  exit 1
fi
# The sans-IO core (no tokio), + the engine, the sidecar, the load generator, HA: each alone.
for features in "" relay sidecar loadgen ha kernel-offload webrtc; do
  echo "cargo check --lib --no-default-features ${features:+--features $features}"
  cargo check --quiet --lib --no-default-features ${features:+--features "$features"}
done
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --workspace --lib --quiet --features "$FEATURES"

# --- Prometheus: alert rules and a live /metrics page ---------------------------------------
echo "== promtool: alert rules, live /metrics"
promtool check rules deploy/prometheus-alerts.rules.yml deploy/prometheus-ha-alerts.rules.yml
promtool test rules deploy/prometheus-ha-alerts.test.yml
cargo build --quiet --bin mcvideo-relay --features loadgen,kernel-offload,webrtc
tmp="$(mktemp -d)"
relay_pid=""
cleanup() {
  if [[ -n "$relay_pid" ]]; then kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
printf '[api]\nlisten = "127.0.0.1:0"\n[log]\nlevel = "warn"\n' >"$tmp/relay.toml"
mkfifo "$tmp/out"
"${CARGO_TARGET_DIR:-target}/debug/mcvideo-relay" serve --config "$tmp/relay.toml" >"$tmp/out" 2>"$tmp/err" &
relay_pid=$!
exec 3<"$tmp/out"
if ! read -r -t 30 line <&3 || [[ "$line" != "listening on "* ]]; then
  cat "$tmp/err" >&2
  echo "test.sh: serve did not start" >&2
  exit 1
fi
addr="${line#listening on }"
exec 4<>"/dev/tcp/${addr%:*}/${addr##*:}"
printf 'GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$addr" >&4
# Body after the blank line that ends the head (the page is sent with Content-Length).
sed '1,/^\r$/d' <&4 >"$tmp/metrics"
exec 4<&- 3<&-
echo "/metrics: $(grep -c '^mcvideo_relay_' "$tmp/metrics") samples"
promtool check metrics <"$tmp/metrics"
cleanup
relay_pid=""
trap - EXIT

# --- fuzz smoke -----------------------------------------------------------------------------
echo "== fuzz smoke (each target ${FUZZ_SECS} s, debug assertions on; long runs: see docs/testing.md)"
(
  cd fuzz
  for t in $(cargo fuzz list); do
    log="$(mktemp)"
    if ! cargo fuzz run -s none -a "$t" -- -max_total_time="$FUZZ_SECS" -rss_limit_mb=2048 >"$log" 2>&1; then
      tail -40 "$log"
      echo "fuzz target $t failed"
      exit 1
    fi
    echo "$t: $(grep -h '^Done' "$log")"
    rm -f "$log"
  done
)

# --- tests ----------------------------------------------------------------------------------
echo "== doc tests"
cargo test --doc --quiet --workspace --features "$FEATURES"

echo "== tests"
# The whole workspace: the fast path's tests need root (they print SKIPPED and pass without it).
cargo nextest run --workspace --no-fail-fast --features "$FEATURES"
