#!/bin/sh
# Policy programming end to end (issue 16 §3/§6): real etcd and felix's policy task (its watch,
# the live model, incremental compile, render and one libnftables transaction) at 1,000
# endpoints and 500 policies. From the etcd write of one more policy, one new WorkloadEndpoint
# (as the CNI path writes it) and one label change until the table holds it (the hook a CNI ADD
# waits on; the kernel's table is then checked against a full render), against `nft -f`
# loading the same final table into an empty ruleset, in the same run. Median of 7 each.
# Prints a Markdown table and the load average before and after.
set -eu
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
# debug profile: the same build the tests use (felix's side is slower than a release build)
cargo build -q -p margay-ctl --bin margayctl
echo "machine: $(uname -srm), $(nproc) cores, $(nft --version), $(/usr/bin/etcd --version | head -1)"
echo "before: $(uptime)"
cargo test -q -p margay-felix --test policy_watch end_to_end -- --ignored --nocapture 2>&1 \
  | grep -E '^\||^base'
echo "after: $(uptime)"
