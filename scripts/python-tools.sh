#!/usr/bin/env bash
# Installs the PyPI tools the tests use (scripts/python-tools.txt: kubernetes-validate, which
# bundles the Kubernetes JSON schemas and validates offline) into a project-local virtual
# environment, .venv-tools/ at the repository root (gitignored), and prints the venv's bin
# directory on stdout. Idempotent: an up-to-date venv is left alone.
#
# Needs Debian's python3 and python3-venv (scripts/install-deps.sh) and PyPI for the first run.
# Usage: scripts/python-tools.sh [VENV_DIR]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv-tools}
reqs=$root/scripts/python-tools.txt

python=/usr/bin/python3
[ -x "$python" ] || python=$(command -v python3 || true)
if [ -z "$python" ]; then
  echo "python-tools: no python3 found; install python3 and python3-venv (scripts/install-deps.sh)" >&2
  exit 1
fi

mkdir -p "$(dirname "$venv")"
# Two test runs at once must not build the same venv twice.
exec 9>"$venv.lock"
flock 9

stamp=$venv/.requirements
if [ -x "$venv/bin/kubernetes-validate" ] && [ -f "$stamp" ] && cmp -s "$reqs" "$stamp"; then
  echo "$venv/bin"
  exit 0
fi

rm -rf "$venv"
if ! "$python" -m venv "$venv" >&2; then
  echo "python-tools: '$python -m venv' failed; on Debian install python3-venv (scripts/install-deps.sh)" >&2
  rm -rf "$venv"
  exit 1
fi
if ! "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$reqs" >&2; then
  echo "python-tools: pip could not install $reqs from PyPI (network or index unreachable?)" >&2
  rm -rf "$venv"
  exit 1
fi
cp "$reqs" "$stamp"
echo "python-tools: installed $(tr '\n' ' ' <"$reqs" | grep -o 'kubernetes-validate==[^ ]*') in $venv" >&2
echo "$venv/bin"
