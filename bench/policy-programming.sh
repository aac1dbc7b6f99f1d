#!/bin/sh
# Policy programming benchmark (issue 16 §6): 1,000 endpoints and 500 policies in felix's
# nftables table; one more policy / one new pod / one label change applied as felix applies
# them (re-render what the change touched, one transaction through its long-lived libnftables
# context), against `nft -f` loading the same final table from scratch, in the same run.
# Prints a Markdown table and the load average before and after.
set -eu
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
# debug profile: the same build the tests use (nft and the kernel do the work measured)
echo "machine: $(uname -srm), $(nproc) cores, $(nft --version)"
echo "before: $(uptime)"
cargo test -p margay-felix --test policy_bench programming -- --ignored --nocapture 2>&1 \
  | grep '^|'
echo "after: $(uptime)"
