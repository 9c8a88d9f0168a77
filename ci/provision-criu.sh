#!/usr/bin/env bash
# Make a working criu available and print its path on the last line of stdout.
#
# Order: --criu-bin / $ZDTM_CRIU / `criu` on PATH / the distro package (only when its
# candidate is new enough) / a build from Debian's source package, cached outside the
# checkout. A candidate counts only if `criu check` passes on this kernel.
#
#   ci/provision-criu.sh [--criu-bin PATH] [--version 4.1.1|4.2.1] [--cache DIR]
#                        [--from-source] [--force-build]
#
# --from-source: this exact version built from Debian's source (reused from the cache when
# already built), whatever else is installed; it does not change the default choice.
# --force-build: rebuild even when a cached build works.
#
# Only the upstream .orig.tar.xz is fetched (the .dsc may not be downloadable); its sha256
# is taken from the signed Sources index via `apt-get source --print-uris`.
set -euo pipefail

version=4.1.1
cache=${ZDTMPY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/zdtmpy}/criu
criu_bin=${ZDTM_CRIU:-}
force_build=0
from_source=0
min_version=4.0

while [ $# -gt 0 ]; do
	case "$1" in
	--criu-bin) criu_bin=$2; shift 2 ;;
	--version) version=$2; shift 2 ;;
	--cache) cache=$2; shift 2 ;;
	--force-build) force_build=1; from_source=1; shift ;;
	--from-source) from_source=1; shift ;;
	-h|--help) sed -n '2,17p' "$0"; exit 0 ;;
	*) echo "provision-criu: unknown argument '$1'" >&2; exit 2 ;;
	esac
done

case "$version" in
4.1.1) suite=trixie ;;
4.2.1) suite=sid ;;
*) echo "provision-criu: unsupported --version '$version' (4.1.1 or 4.2.1)" >&2; exit 2 ;;
esac

log() { echo "provision-criu: $*" >&2; }

# `criu check` exits 0 on a usable kernel/criu pair; bounded so a hang cannot stall CI.
criu_works() {
	local bin=$1 out
	[ -x "$bin" ] || return 1
	if out=$(timeout 60 "$bin" check 2>&1); then
		return 0
	fi
	log "$bin: 'criu check' failed: $({ printf '%s\n' "$out" | grep -iE 'error|fail' || printf '%s\n' "$out" | tail -n1; } | sed -n 1p)"
	return 1
}

# Record the choice so the plugin finds the same criu without probing every candidate.
chosen() {
	mkdir -p "$cache"
	[ "$from_source" = 1 ] || printf '%s\n' "$1" >"$cache/selected"
	echo "$1"
	exit 0
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_update() {
	[ $apt_updated = 1 ] && return 0
	as_root timeout 600 apt-get update -qq >&2
	apt_updated=1
}

if [ "$from_source" = 0 ]; then
	if [ -n "$criu_bin" ]; then
		if criu_works "$criu_bin"; then chosen "$criu_bin"; fi
		log "requested criu '$criu_bin' is not usable; looking further"
	fi
	built="$cache/$version/criu/criu"
	if criu_works "$built" 2>/dev/null; then
		log "reusing cached build $built"
		chosen "$built"
	fi
	if path_criu=$(command -v criu); then
		if criu_works "$path_criu"; then chosen "$path_criu"; fi
	elif command -v apt-get >/dev/null; then
		# Debian 13 ships a criu that works; Debian 12's 3.17 fails on new kernels, so
		# install the package only when its candidate is new enough to be worth trying.
		apt_update
		cand=$(apt-cache policy criu 2>/dev/null | awk '/Candidate:/ {print $2}')
		if [ -n "$cand" ] && [ "$cand" != "(none)" ] &&
			dpkg --compare-versions "$cand" ge "$min_version"; then
			log "installing distro criu $cand"
			as_root env DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq criu >&2
			if criu_works /usr/sbin/criu; then chosen /usr/sbin/criu; fi
		else
			log "distro criu candidate '${cand:-none}' is older than $min_version; building $version"
		fi
	fi
fi

# --- build from Debian's source package -------------------------------------------------
srcdir="$cache/$version"
mkdir -p "$cache"
exec 9>"$cache/.lock-$version"
flock 9   # two provisioning runs at once build once

if [ "$force_build" = 0 ] && criu_works "$srcdir/criu/criu" 2>/dev/null; then
	chosen "$srcdir/criu/criu"
fi

# A deb-src entry for the suite, pointing at the mirror this machine already uses.
src_list=/etc/apt/sources.list.d/zdtmpy-criu-src.sources
if [ ! -f "$src_list" ] || ! grep -q "Suites: $suite\$" "$src_list"; then
	mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | sed -n 1p)
	[ -n "$mirror" ] || mirror=$(awk '/^deb / && !/security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
	[ -n "$mirror" ] || { log "cannot find a Debian mirror in the apt configuration"; exit 1; }
	as_root tee "$src_list" >/dev/null <<EOF
Types: deb-src
URIs: $mirror
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	apt_updated=0
fi
apt_update

log "installing build dependencies"
as_root env DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y -qq --no-install-recommends \
	build-essential pkg-config curl xz-utils ca-certificates \
	libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev protobuf-compiler python3-protobuf \
	libnl-3-dev libnl-route-3-dev libnet1-dev libcap-dev libbsd-dev uuid-dev \
	libgnutls28-dev libnftables-dev libaio-dev iproute2 >&2

# "'URL' name size SHA256:hex" lines for the source package's files, from the signed index.
uris=$(cd /tmp && apt-get source --print-uris -qq "criu/$suite" 2>/dev/null || true)
line=$(printf '%s\n' "$uris" | grep "criu_${version}.orig.tar.xz" | sed -n 1p)
[ -n "$line" ] || { log "Sources index for $suite has no criu_${version}.orig.tar.xz (got: $(printf '%s' "$uris" | awk '{print $2}' | tr '\n' ' '))"; exit 1; }
url=$(printf '%s' "$line" | awk '{print $1}' | tr -d "'")
name=$(printf '%s' "$line" | awk '{print $2}')
sha=$(printf '%s' "$line" | grep -o 'SHA256:[0-9a-f]*' | cut -d: -f2)
[ -n "$sha" ] || { log "no SHA256 for $name in the Sources index"; exit 1; }

tarball="$cache/$name"
if [ ! -f "$tarball" ] || ! echo "$sha  $tarball" | sha256sum -c --quiet - 2>/dev/null; then
	log "downloading $name"
	timeout 600 curl -fsSL --retry 3 -o "$tarball.part" "$url"
	echo "$sha  $tarball.part" | sha256sum -c --quiet - || { log "checksum mismatch for $name"; rm -f "$tarball.part"; exit 1; }
	mv "$tarball.part" "$tarball"
fi

log "building criu $version in $srcdir"
rm -rf "$srcdir.tmp"
mkdir -p "$srcdir.tmp"
tar -xJf "$tarball" -C "$srcdir.tmp" --strip-components=1
# Debian's own build disables nothing we need; `make criu` builds just the binary.
if ! timeout 1800 make -C "$srcdir.tmp" -j"$(nproc)" criu >"$cache/build-$version.log" 2>&1; then
	log "make criu failed; last lines of $cache/build-$version.log:"
	tail -n 30 "$cache/build-$version.log" >&2
	exit 1
fi
rm -rf "$srcdir"
mv "$srcdir.tmp" "$srcdir"
# The tree was built at another path; the binary does not depend on it.
if ! criu_works "$srcdir/criu/criu"; then
	log "built criu fails 'criu check' on this kernel"
	exit 1
fi
log "built $srcdir/criu/criu ($("$srcdir/criu/criu" --version | sed -n 1p))"
chosen "$srcdir/criu/criu"
