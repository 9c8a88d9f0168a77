#!/usr/bin/env bash
# `tmt lint`, then the tmt plan (tmt/plans/matrix) run here with `provision --how local`
# against the criu given, on a small slice of the matrix by default.
#   ci/tmt-check.sh CRIU [ZDTMPY_ARGS]
# tmt comes from PyPI into .venv-tmt; it needs rsync (apt) to copy the tree for the run.
set -euo pipefail
cd "$(dirname "$0")/.."
criu=${1:?usage: ci/tmt-check.sh CRIU [ZDTMPY_ARGS]}
args=${2:---zdtm-mode plain --zdtm-compress off --zdtm-compress page -k pages01}
if ! command -v rsync >/dev/null; then
	timeout 600 apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq rsync >&2
fi
if [ ! -x .venv-tmt/bin/tmt ]; then
	python3 -m venv .venv-tmt
	timeout 900 .venv-tmt/bin/pip install -q --disable-pip-version-check tmt >&2
fi
tmt=.venv-tmt/bin/tmt
timeout 300 "$tmt" lint
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rc=0
# local provisioning runs the tests on this very machine: tmt wants that said explicitly
timeout 1800 "$tmt" --feeling-safe run --id "$work/run" --all \
	-e "ZDTM_CRIU=$criu" -e "ZDTMPY_ARGS=\"$args\"" provision --how local || rc=$?
out=$(find "$work/run" -path '*tests/matrix*' -name output.txt | head -n1)
[ -n "$out" ] && tail -n 12 "$out"
[ $rc -eq 0 ] || { echo "tmt-check: tmt run exited $rc" >&2; exit 1; }
