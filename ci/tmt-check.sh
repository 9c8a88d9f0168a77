#!/usr/bin/env bash
# `tmt lint`, then the tmt plan (tmt/plans/matrix) run here with `provision --how local`
# against the criu given, on a small slice of the matrix by default.
#   ci/tmt-check.sh CRIU [ZDTMPY_ARGS]
# tmt comes from PyPI into a venv in zdtmpy's cache; it needs rsync (apt) to copy the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
criu=${1:?usage: ci/tmt-check.sh CRIU [ZDTMPY_ARGS]}
args=${2:---zdtm-mode plain --zdtm-compress off --zdtm-compress page -k pages01}
if ! command -v rsync >/dev/null; then
	timeout 600 apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq rsync >&2
fi
# tmt's own venv lives in the cache, beside the criu builds: a second run reuses it
venv=${ZDTMPY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/zdtmpy}/tmt-venv
if [ ! -x "$venv/bin/tmt" ]; then
	rm -rf "$venv"
	python3 -m venv "$venv"
	timeout 900 "$venv/bin/pip" install -q --disable-pip-version-check tmt >&2 \
		|| { rm -rf "$venv"; echo "tmt-check: pip install tmt failed" >&2; exit 1; }
fi
tmt=$venv/bin/tmt
timeout 300 "$tmt" lint
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rc=0
# local provisioning runs the tests on this very machine: tmt wants that said explicitly
timeout 1800 "$tmt" --feeling-safe run --id "$work/run" --all \
	-e "ZDTM_CRIU=$criu" -e "ZDTMPY_ARGS=\"$args\"" provision --how local || rc=$?
out=$(find "$work/run" -path '*tests/matrix*' -name output.txt | sed -n 1p)
[ -n "$out" ] && tail -n 12 "$out"
[ $rc -eq 0 ] || { echo "tmt-check: tmt run exited $rc" >&2; exit 1; }
