#!/bin/sh
# Policy programming benchmark (issue 16 §6): 1,000 endpoints and 500 policies in felix's
# nftables table; one more policy / one new pod / one label change applied incrementally,
# against `nft -f` loading the same final table from scratch. Prints a Markdown table.
set -eu
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
# debug profile: the same build the tests use (nft and the kernel do the work measured)
echo "machine: $(uname -srm), $(nproc) cores, $(nft --version)"
cargo test -p margay-felix --test policy_bench programming -- --ignored --nocapture 2>&1 \
  | grep '^|'
