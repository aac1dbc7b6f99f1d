#!/usr/bin/env bash
# Seeds the decode_message corpus with the BIRD 2 golden messages (binary, one per file).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
corpus="$here/corpus/decode_message"
mkdir -p "$corpus"
for f in "$here"/../tests/fixtures/bird/*.hex; do
    xxd -r -p "$f" >"$corpus/$(basename "$f" .hex)" 2>/dev/null ||
        python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(open(sys.argv[1]).read().strip()))' "$f" >"$corpus/$(basename "$f" .hex)"
done
echo "seeded $(ls "$corpus" | wc -l) inputs into $corpus"
