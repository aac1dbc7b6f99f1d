#!/usr/bin/env bash
# Runs the BGP decoder's fuzz target (bgp/fuzz, target decode_message) for a bounded time on the
# kept corpus, and fails naming the crash input when the decoder panics or the sanitizer reports
# an error. New inputs go to a scratch directory: the checkout is left as it was unless
# FUZZ_KEEP=1 asks to merge the ones that reached new code into the kept corpus.
#
#   scripts/fuzz.sh [SECONDS]        # default 60
#
# Works on the stable toolchain: cargo-fuzz needs -Z flags, which RUSTC_BOOTSTRAP=1 unlocks, and
# the AddressSanitizer runtime ships with stable's rust-std for x86_64-unknown-linux-gnu.
# cargo-fuzz itself (a pinned version, --locked) is installed into $MARGAY_TOOLS (default
# .tools/ in the repository) the first time.
#
# Environment:
#   FUZZ_SANITIZER   address (default) or none
#   FUZZ_KEEP=1      merge the new inputs that reach new code into bgp/fuzz/corpus (on purpose,
#                    to commit them); without it the kept corpus is only read
#   FUZZ_CMIN=1      after the run, minimise the whole corpus (may drop seeds that add nothing)
#   FUZZ_MAX_LEN     longest input tried, in bytes (default 4096, the RFC 4271 message limit;
#                    the extended-message context of the target decodes longer ones when found)
#   CARGO_TARGET_DIR the build goes to $CARGO_TARGET_DIR/fuzz (default target/fuzz)
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)

seconds=${1:-60}
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "fuzz.sh: SECONDS must be a positive whole number, got '$seconds'" >&2
  exit 2
fi

cargo_fuzz_version=0.13.1
tools=${MARGAY_TOOLS:-$repo/.tools}
target=decode_message
corpus=$repo/bgp/fuzz/corpus/$target
sanitizer=${FUZZ_SANITIZER:-address}
max_len=${FUZZ_MAX_LEN:-4096}
target_dir=${CARGO_TARGET_DIR:-$repo/target}/fuzz

if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
  PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
# The stable toolchain, also on a machine whose rustup default is something else.
if command -v rustup >/dev/null 2>&1; then
  export RUSTUP_TOOLCHAIN=${RUSTUP_TOOLCHAIN:-stable}
fi
export RUSTC_BOOTSTRAP=1

if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep " $cargo_fuzz_version\$" >/dev/null; then
  echo "fuzz.sh: installing cargo-fuzz $cargo_fuzz_version into $tools"
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --root "$tools"
fi
PATH="$tools/bin:$PATH"

work=$(mktemp -d /tmp/margay-fuzz.XXXXXX)
new_inputs=$work/new
artifacts=$work/artifacts
mkdir -p "$new_inputs" "$artifacts" "$corpus"
log=$work/fuzz.log

cd bgp
fuzz=(cargo fuzz)
build_flags=(--sanitizer "$sanitizer" --target-dir "$target_dir" --debug-assertions)

echo "fuzz.sh: building $target (sanitizer: $sanitizer)"
"${fuzz[@]}" build "${build_flags[@]}" "$target"

before=$(find "$corpus" -maxdepth 1 -type f | wc -l)
echo "fuzz.sh: running $target for ${seconds}s on $before kept inputs (log: $log)"
status=0
# New inputs go to the first directory (a scratch one), so the kept corpus changes only by the
# merge below. -timeout: one input taking seconds is a hang worth reporting.
"${fuzz[@]}" run "${build_flags[@]}" "$target" "$new_inputs" "$corpus" -- \
  -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?

# libFuzzer's last status line: "#N DONE cov: C ft: F corp: K/SIZE exec/s: E rss: R".
last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
runs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' || true)
echo "fuzz.sh: ${last:-no status line}"

crash=$(find "$artifacts" -type f | head -n 1)
if [ "$status" -ne 0 ] || [ -n "$crash" ]; then
  tail -n 60 "$log" >&2
  if [ -n "$crash" ]; then
    echo "fuzz.sh: CRASH: input kept at $crash" >&2
    echo "fuzz.sh: reproduce: (cd bgp && RUSTC_BOOTSTRAP=1 $tools/bin/cargo-fuzz run" \
      "--sanitizer $sanitizer --debug-assertions $target $crash)" >&2
  fi
  echo "fuzz.sh: FAIL: $target exited with status $status after ${runs:-?} executions" >&2
  exit 1
fi

found=$(find "$new_inputs" -maxdepth 1 -type f | wc -l)
if [ "$found" -gt 0 ] && [ "${FUZZ_KEEP:-0}" = 1 ]; then
  # -merge=1 adds to the first directory only the inputs of the others that reach new code.
  "${fuzz[@]}" run "${build_flags[@]}" "$target" "$corpus" "$new_inputs" -- \
    -merge=1 -max_len="$max_len" >>"$log" 2>&1
fi
if [ "${FUZZ_CMIN:-0}" = 1 ]; then
  "${fuzz[@]}" cmin "${build_flags[@]}" "$target" "$corpus" -- -max_len="$max_len" >>"$log" 2>&1
fi
after=$(find "$corpus" -maxdepth 1 -type f | wc -l)
size=$(find "$corpus" -maxdepth 1 -type f -exec cat {} + | wc -c)

if [ "${FUZZ_KEEP:-0}" = 1 ]; then
  kept="corpus $before -> $after inputs ($size bytes)"
else
  kept="$found new input(s) found and discarded with the scratch directory (FUZZ_KEEP=1 merges them); corpus unchanged ($after inputs)"
fi
echo "fuzz.sh: PASS: ${runs:-?} executions in ${seconds}s, no crash; $kept"
rm -rf "$work"
