#!/usr/bin/env bash
# Install zdtmpy from the source tree SRC into a fresh virtualenv (a pip install of its own,
# not the checkout's .venv) and run the default matrix it ships against the criu under test:
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
# A real (not editable) install: the run below uses what the package ships (descriptors,
# workloads, the C library), as a packager's or Testing Farm's run does. The build backend
# goes into the venv itself: no second, isolated build environment.
pip=("$work/venv/bin/python" -m pip install -q --disable-pip-version-check)
timeout 900 "${pip[@]}" "setuptools>=77" \
	&& timeout 900 "${pip[@]}" --no-build-isolation "$work/src" \
	|| { echo "run-installed-matrix: pip install of zdtmpy from $src failed" >&2; exit 1; }
(cd "$work" && "$work/venv/bin/python" -I -c 'import zdtmpy, sys; print(f"run-installed-matrix: zdtmpy {zdtmpy.__version__} installed at {zdtmpy.__file__}")')
echo "run-installed-matrix: venv and install took ${SECONDS}s"

mkdir "$work/run"
cd "$work/run"  # outside the tree: nothing of it is importable from here
rc=0
# shellcheck disable=SC2086 # ZDTMPY_ARGS is a word list by design
"$work/venv/bin/pytest" -p no:cacheprovider -rs -n auto --zdtm-require-criu \
	--rootdir "$work/run" --zdtm-results "$work/results" --junitxml "$out/junit.xml" \
	--zdtm-report "$out/zdtm-report.json" --pyargs zdtmpy.descs ${ZDTMPY_ARGS:-} "$@" \
	|| rc=$?
if [ -d "$work/results" ] && [ -n "$(ls -A "$work/results" 2>/dev/null)" ]; then
	cp -a "$work/results" "$out/zdtm-results"  # only failing tests keep a directory
fi
"$work/venv/bin/zdtmpy" report "$out/zdtm-report.json" || true
echo "run-installed-matrix: done after ${SECONDS}s (pytest exit $rc)"
exit $rc
