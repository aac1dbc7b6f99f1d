#!/bin/sh
# Policy programming, time to in force (issue 16 §6): margay-felix running as a process in
# cluster mode (networking backend `none`) in a node namespace with real etcd, 1,000
# WorkloadEndpoints (each with its veth) and 500 NetworkPolicies (each endpoint selected by 10).
# One more policy, one new pod (WorkloadEndpoint written, veth present), one label change (and
# each one's revert), written with the datastore's client: from the etcd write returning until
# the kernel commits felix's transaction, seen by `nft monitor` in the node's namespace (its
# `# new generation` line, time-stamped on arrival; the script prints that detector's own lag).
# Against, in the same run: `nft -f` loading the same final table (the kernel's listing of
# felix's table) into an empty namespace. TRIALS (default 30) of each; median and p99.
# Sizes: ENDPOINTS, POLICIES, APPS (policies per endpoint = POLICIES / APPS).
# PROFILE=release builds felix and the test in release mode (default: debug, as the tests).
set -eu
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
profile=${PROFILE:-debug}
flag=""
[ "$profile" = release ] && flag="--release"
cargo build -q $flag -p margay-felix --bin margay-felix
echo "machine: $(uname -srm), $(nproc) cores, $(nft --version), $(/usr/bin/etcd --version | head -1); $profile build"
echo "before: $(uptime)"
cargo test -q $flag -p margay-felix --test policy_in_force in_force -- --ignored --nocapture 2>&1 \
  | grep -E '^\||^base|^detection|^\(final|panicked|assert'
echo "after: $(uptime)"
