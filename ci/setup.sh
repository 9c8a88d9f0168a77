#!/usr/bin/env bash
# Set up a fresh Debian machine (as root) for zdtmpy: system packages, the project venv
# in .venv, and a working criu (found or built; see ci/provision-criu.sh).
# Idempotent: a second run only checks. Prints the criu it chose on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
command -v python3 >/dev/null || need+=(python3)
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v lz4 >/dev/null || need+=(lz4)
command -v flock >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl ca-certificates)
if command -v python3 >/dev/null; then
	python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
	inc=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
	[ -f "$inc/Python.h" ] || need+=(python3-dev)
else
	need+=(python3-venv python3-dev)
fi
# CRIU's own ZDTM corpus (--zdtm-suite): building its tests with upstream's Makefiles, the
# ns flavor's network lock (iptables), upstream hooks and zdtm.py for `zdtmpy bench corpus`.
# libbpf-dev: upstream's Makefiles build bpf_array/bpf_hash (and criu its BPF map support)
# only when pkg-config finds libbpf; installed before criu is built below.
for p in libnl-route-3-dev libcap-dev libaio-dev libbpf-dev pkg-config iptables iproute2 \
	protobuf-compiler python3-yaml python3-protobuf python3-junit.xml; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	echo "setup: installing ${need[*]}" >&2
	as_root timeout 600 apt-get update -qq >&2
	as_root env DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "${need[@]}" >&2
fi

if [ ! -x .venv/bin/python ]; then
	python3 -m venv .venv
fi
stamp=.venv/.zdtmpy-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
	echo "setup: installing zdtmpy into .venv" >&2
	.venv/bin/python -m pip install -q --upgrade pip >&2
	.venv/bin/python -m pip install -q -e '.[lint,bench,package,test]' >&2
	touch "$stamp"
fi

ci/provision-criu.sh "$@"
