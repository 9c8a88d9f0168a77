#!/usr/bin/env bash
# Install zdtmpy from the source tree SRC into a fresh virtualenv (a pip install of its own,
# not the checkout's .venv) and run SRC's default test matrix with it against the criu under test:
# $ZDTM_CRIU if set, else criu on PATH, else ci/provision-criu.sh's build cache.
# Used by the tmt plan (tmt/) and the autopkgtest recipe (contrib/autopkgtest/).
#
#   ci/run-installed-matrix.sh SRC [PYTEST ARGS...]
#   ZDTMPY_ARGS   extra pytest arguments (word-split), e.g. "--zdtm-mode plain -k pages01"
#   ZDTMPY_OUT    where junit.xml, zdtm-report.json and failing tests' directories go
#                 (default ./zdtmpy-out)
# Needs python3 with venv, a C compiler and PyPI for the dependencies. Leaves nothing
# behind but ZDTMPY_OUT; a run where every real-criu test skipped fails.
set -euo pipefail
[ $# -ge 1 ] && [ -d "$1" ] || { echo "usage: $0 SRC-TREE [PYTEST ARGS...]" >&2; exit 2; }
src=$(cd "$1" && pwd)
shift
out=${ZDTMPY_OUT:-$PWD/zdtmpy-out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/zdtmpy-installed.XXXXXX")
trap 'rm -rf "$work"' EXIT

# a copy, so building the wheel writes nothing into SRC
mkdir "$work/src"
tar -C "$src" --exclude=./.git --exclude=./.venv --exclude=./.tox --exclude=./zdtm-results \
	--exclude=./build --exclude=./dist --exclude='*.egg-info' -cf - . | tar -C "$work/src" -xf -
python3 -m venv "$work/venv"
# editable: the package finds its C workload library in the tree it was installed from.
# The build backend goes into the venv itself: no second, isolated build environment.
pip=("$work/venv/bin/python" -m pip install -q --disable-pip-version-check)
timeout 900 "${pip[@]}" "setuptools>=77" \
	&& timeout 900 "${pip[@]}" --no-build-isolation -e "$work/src" \
	|| { echo "run-installed-matrix: pip install of zdtmpy from $src failed" >&2; exit 1; }
(cd "$work" && "$work/venv/bin/python" -I -c 'import zdtmpy, sys; print(f"run-installed-matrix: zdtmpy {zdtmpy.__version__} installed at {zdtmpy.__file__}")')
echo "run-installed-matrix: venv and install took ${SECONDS}s"

cd "$work/src"
rc=0
# shellcheck disable=SC2086 # ZDTMPY_ARGS is a word list by design
"$work/venv/bin/pytest" -p no:cacheprovider -rs -n auto --zdtm-require-criu \
	--zdtm-results "$work/results" --junitxml "$out/junit.xml" \
	--zdtm-report "$out/zdtm-report.json" zdtmpy/descs ${ZDTMPY_ARGS:-} "$@" || rc=$?
if [ -d "$work/results" ] && [ -n "$(ls -A "$work/results" 2>/dev/null)" ]; then
	cp -a "$work/results" "$out/zdtm-results"  # only failing tests keep a directory
fi
"$work/venv/bin/zdtmpy" report "$out/zdtm-report.json" || true
echo "run-installed-matrix: done after ${SECONDS}s (pytest exit $rc)"
exit $rc
