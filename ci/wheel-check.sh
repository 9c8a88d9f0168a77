#!/usr/bin/env bash
# The shipped product: build the wheel with `python -m build`, install it into a fresh venv
# OUTSIDE the clone, and run the built-in plain matrix from there against the criu ci/
# provides (no clone on the path: workloads, the C library and descriptors come from the
# wheel). ~1-3 min: the venv installs the wheel's dependencies from PyPI.
# Usage: ci/wheel-check.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
criu=$(ci/provision-criu.sh | tail -n1)
work=$(mktemp -d /tmp/zdtmpy-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT
timeout 600 .venv/bin/python -m build --wheel --outdir "$work/dist" . >"$work/build.log" 2>&1 || {
	tail -n 30 "$work/build.log" >&2
	echo "wheel-check: python -m build failed" >&2
	exit 1
}
python3 -m venv "$work/venv"
timeout 600 "$work/venv/bin/python" -m pip install -q "$work"/dist/zdtmpy-*.whl
cd "$work"   # outside the clone: nothing of it is importable from here
"$work/venv/bin/python" - <<'PY'
import pathlib, zdtmpy
where = pathlib.Path(zdtmpy.__file__).resolve()
assert "site-packages" in where.parts, f"zdtmpy imported from {where}, not the wheel"
print(f"wheel-check: zdtmpy from {where.parent}")
PY
ZDTM_REQUIRE_CRIU=1 timeout 900 "$work/venv/bin/pytest" --pyargs zdtmpy.descs --rootdir "$work" \
	--zdtm-mode plain --criu-bin "$criu" -n auto -p no:cacheprovider -rs "$@"
echo "wheel-check: the installed wheel ran the built-in plain matrix"
