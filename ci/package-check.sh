#!/usr/bin/env bash
# Build the sdist and the wheel as a release would, and let twine check their metadata.
# Usage: ci/package-check.sh [OUTDIR]   (default: a temporary directory, removed after)
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
out=${1:-}
if [ -z "$out" ]; then
	out=$(mktemp -d)
	trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"
timeout 600 "$py" -m build --sdist --wheel --outdir "$out" . >"$out/build.log" 2>&1 || {
	tail -n 30 "$out/build.log" >&2
	echo "package-check: python -m build failed" >&2
	exit 1
}
timeout 120 "$py" -m twine check --strict "$out"/*.tar.gz "$out"/*.whl
# the wheel carries the license and the version from zdtmpy/__init__.py
version=$("$py" -c 'import re; print(re.search(r"__version__ = \"(.+)\"", open("zdtmpy/__init__.py").read())[1])')
ls "$out"/zdtmpy-"$version"-py3-none-any.whl "$out"/zdtmpy-"$version".tar.gz >/dev/null
# read the listing whole: piping it into 'grep -q' lets grep exit at the first match, and
# with pipefail the writer's broken pipe failed CI on a machine where the listing was slower
"$py" - "$out"/zdtmpy-"$version"-py3-none-any.whl <<'PY'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as wheel:
    if not any(name.endswith("licenses/LICENSE") for name in wheel.namelist()):
        sys.exit(f"package-check: {sys.argv[1]} has no licenses/LICENSE")
PY
echo "package-check: zdtmpy $version sdist and wheel pass twine check"
