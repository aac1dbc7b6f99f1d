#!/usr/bin/env bash
# Runs every margay test: unit tests, the network-namespace suites (BIRD interop, lab
# self-tests) and doc tests. Needs root (it creates network namespaces) and Debian (it installs
# the system packages the suites use). Exits non-zero when anything fails; never skips a suite.
#
#   sudo scripts/test.sh            # everything
#   sudo scripts/test.sh -p margay-tests   # extra arguments go to `cargo test`
set -euo pipefail

cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: must run as root: the namespace suites create network namespaces, veths and" >&2
  echo "test.sh: TCP-MD5 sessions (CAP_SYS_ADMIN, CAP_NET_ADMIN). Run: sudo scripts/test.sh" >&2
  exit 1
fi

scripts/install-deps.sh

# sudo resets PATH; root's own rustup install is the usual place for cargo then.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
  PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo not found. Install Rust (1.90 or newer, https://rustup.rs) for root," >&2
  echo "test.sh: or run with the toolchain on PATH: sudo env PATH=\"\$PATH\" scripts/test.sh" >&2
  exit 1
fi

log_dir=$(mktemp -d /tmp/margay-test.XXXXXX)
test_log="$log_dir/cargo-test.log"
namespaces_before=$(ip netns list | awk '{print $1}' | sort)
start=$(date +%s)

echo "test.sh: building the workspace"
if ! cargo build --workspace --all-targets; then
  echo "================ margay test summary ================"
  echo "the workspace does not build; no test ran"
  echo "RESULT: FAIL"
  exit 1
fi

status=0
echo "test.sh: running every test (cargo test --workspace --all-targets --no-fail-fast $*)"
cargo test --workspace --all-targets --no-fail-fast "$@" 2>&1 | tee "$test_log" || status=1
if [ $# -eq 0 ]; then
  echo "test.sh: running doc tests"
  cargo test --workspace --doc --no-fail-fast 2>&1 | tee -a "$test_log" || status=1
fi

# The benchmark plots: every number in bench/plot/scale-curves.csv is in the BENCHMARKS.md
# section it cites, and the SVGs draw every series (Python's standard library only).
plots_result="not run (a partial run: arguments were given)"
if [ $# -eq 0 ]; then
  echo "test.sh: checking the benchmark plots (python3 -m unittest bench/plot/test_plot.py)"
  if python3 -m unittest bench/plot/test_plot.py 2>&1 | tee -a "$test_log"; then
    plots_result="PASS"
  else
    plots_result="FAIL"
    status=1
  fi
fi

# The BGP decoder's fuzz target, for a bounded time on the kept corpus (scripts/fuzz.sh).
fuzz_result="not run (a partial run: arguments were given)"
if [ $# -eq 0 ]; then
  fuzz_seconds=${MARGAY_FUZZ_SECONDS:-90}
  fuzz_log="$log_dir/fuzz.log"
  echo "test.sh: fuzzing the BGP decoder for ${fuzz_seconds}s"
  if scripts/fuzz.sh "$fuzz_seconds" 2>&1 | tee "$fuzz_log"; then
    fuzz_result=$(grep '^fuzz.sh: PASS' "$fuzz_log" | sed 's/^fuzz.sh: //')
  else
    fuzz_result="FAIL: $(grep -E '^fuzz.sh: (CRASH|FAIL)' "$fuzz_log" | sed 's/^fuzz.sh: //' | tr '\n' ' ')"
    status=1
  fi
fi

elapsed=$(( $(date +%s) - start ))
summary=$(awk '
  /^ *Running / { target = $2 }
  /^ *Doc-tests / { target = "doc:" $2 }
  / \.\.\. FAILED$/ { failed_names = failed_names "  " target ": " $2 "\n" }
  /^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i+1) ~ /^passed;?$/) passed += $i
      if ($(i+1) ~ /^failed;?$/) failed += $i
      if ($(i+1) ~ /^ignored;?$/) ignored += $i
    }
  }
  END {
    printf "passed %d, failed %d, ignored %d\n", passed, failed, ignored
    if (failed_names != "") printf "failed tests:\n%s", failed_names
  }' "$test_log")

namespaces_after=$(ip netns list | awk '{print $1}' | sort)
leaked=$(comm -13 <(echo "$namespaces_before") <(echo "$namespaces_after") | grep '^mg' || true)

echo
echo "================ margay test summary ================"
echo "$summary"
echo "fuzz (bgp decode_message): ${fuzz_result:-FAIL: no result line}"
echo "benchmark plots (bench/plot/test_plot.py): $plots_result"
if [ -n "$leaked" ]; then
  echo "namespaces created during the run and still present (a leak, or another user's):"
  echo "$leaked" | sed 's/^/  /'
fi
echo "time: $((elapsed / 60))m$((elapsed % 60))s   full log: $test_log"
if [ "$status" -ne 0 ]; then
  echo "RESULT: FAIL"
  exit 1
fi
echo "RESULT: PASS"
