#!/usr/bin/env bash
# Exercise contrib/autopkgtest/ the way autopkgtest runs it (Debian's autopkgtest, null
# runner, as root) against the criu given, on a small slice of the matrix by default.
#   ci/autopkgtest-check.sh CRIU [ZDTMPY_ARGS]
# The recipe's own control file is used unchanged but for one thing: its `criu` dependency
# is dropped, because the criu under test here is a build (ZDTM_CRIU), not a package.
set -euo pipefail
cd "$(dirname "$0")/.."
criu=${1:?usage: ci/autopkgtest-check.sh CRIU [ZDTMPY_ARGS]}
args=${2:---zdtm-mode plain --zdtm-compress off --zdtm-compress page -k pages01}
if ! command -v autopkgtest >/dev/null; then
	timeout 600 apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq autopkgtest >&2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# a copy of this tree for pip to build from (pip builds in the directory it is given)
mkdir "$work/src"
tar --exclude=./.git --exclude=./.venv --exclude=./.tox --exclude=./zdtm-results \
	--exclude=./build --exclude=./dist --exclude='*.egg-info' -cf - . | tar -C "$work/src" -xf -
pkg=$work/criu-zdtmpy-check
mkdir -p "$pkg/debian"
cp -r contrib/autopkgtest/debian/tests "$pkg/debian/"
sed -i '/^Depends:/,/^Restrictions:/{/^ *criu,$/d; s/^Depends: criu,$/Depends:/}' \
	"$pkg/debian/tests/control"
grep -q 'Restrictions: needs-root, isolation-machine' "$pkg/debian/tests/control"
cat >"$pkg/debian/control" <<CONTROL
Source: criu-zdtmpy-check
Maintainer: zdtmpy CI <ci@localhost>

Package: criu-zdtmpy-check
Architecture: all
Description: zdtmpy's autopkgtest recipe, exercised in zdtmpy's CI
CONTROL
cat >"$pkg/debian/changelog" <<CHANGELOG
criu-zdtmpy-check (0.1) unstable; urgency=medium

  * CI check.

 -- zdtmpy CI <ci@localhost>  Mon, 30 Nov 2026 00:00:00 +0000
CHANGELOG
rc=0
timeout 1800 autopkgtest -B --output-dir "$work/out" \
	--env "ZDTMPY_SOURCE=$work/src" --env "ZDTM_CRIU=$criu" --env "ZDTMPY_ARGS=$args" \
	"$pkg/" -- null || rc=$?
cat "$work/out/summary" 2>/dev/null || true
# autopkgtest exits 0 when all passed, 2 when some were skipped: a skip is a failure here
[ $rc -eq 0 ] || { echo "autopkgtest-check: autopkgtest exited $rc" >&2; exit 1; }
