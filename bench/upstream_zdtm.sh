#!/usr/bin/env bash
# Run upstream CRIU's test/zdtm.py on a few static tests, N times each, and print the wall
# time of every run. The baseline for `zdtmpy bench cycle`.
#
#   bench/upstream_zdtm.sh [--tree DIR] [--criu-bin PATH] [--repeat N] [--tests "maps00 cow01"]
#                          [--flavor auto|h|ns|uns] [--prepare-only] [--no-install]
#
# --tree      criu source tree holding test/zdtm.py (default: the tree the criu binary was
#             built in, else $ZDTMPY_CACHE/criu/4.1.1). Upstream code stays there: nothing of
#             it is copied into this repository.
# --flavor    auto (default): `ns` for tests flagged suid, `uns` for the others. On this
#             machine root has no CAP_SYS_RESOURCE, and zdtm.py makes a non-suid test drop to
#             uid 18943, so criu cannot read its rlimits in `h` or `ns` ("Can't get rlimit 0");
#             in `uns` the test's user namespace is owned by root, which is enough.
#             `ns` (own PID+mount+net namespaces) is the closest to zdtmpy, which runs each
#             workload as init of its own PID namespace.
#
# Stdout: one line per run,
#   upstream test=zdtm/static/maps00 flavor=uns run=1/3 wall=1.043 result=PASS log=PATH
# then one `upstream-median ...` line per test. Progress and errors go to stderr. Exit status
# 1 if any run failed, 2 on bad usage or when the tree cannot be prepared.
#
# Preparation is idempotent: a second call finds everything built and goes straight to the
# runs. It builds, inside the tree: pycriu's generated protobuf modules (`make lib`), the
# zdtm test library and the selected static tests, umount2 and zdtm_ct; and installs with
# apt-get the Debian packages zdtm.py needs when missing: python3-yaml and python3-protobuf
# (zdtm.py runs with the system /usr/bin/python3, not a venv) and iptables (criu's network
# lock in the `ns`/`uns` flavours execs iptables-restore).
set -euo pipefail

cache=${ZDTMPY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/zdtmpy}
tree=
criu_bin=
repeat=3
tests="maps00 cow01"
flavor=auto
prepare_only=0
install=1

die() { echo "upstream_zdtm: error: $*" >&2; exit 2; }
log() { echo "upstream_zdtm: $*" >&2; }

while [ $# -gt 0 ]; do
	case "$1" in
	--tree) tree=$2; shift 2 ;;
	--criu-bin) criu_bin=$2; shift 2 ;;
	--repeat) repeat=$2; shift 2 ;;
	--tests) tests=$2; shift 2 ;;
	--flavor) flavor=$2; shift 2 ;;
	--prepare-only) prepare_only=1; shift ;;
	--no-install) install=0; shift ;;
	-h|--help) sed -n '2,28p' "$0"; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done

[ "$(id -u)" = 0 ] || die "zdtm.py must run as root (it dumps and restores processes)"
case "$repeat" in ''|*[!0-9]*|0) die "--repeat wants a positive integer, got '$repeat'" ;; esac
case "$flavor" in auto|h|ns|uns) ;; *) die "--flavor: auto, h, ns or uns, got '$flavor'" ;; esac

# The tree: explicit, else the one the binary was built in, else the default cache version.
if [ -z "$tree" ] && [ -n "$criu_bin" ]; then
	guess=$(cd "$(dirname "$criu_bin")/.." 2>/dev/null && pwd) || guess=
	[ -n "$guess" ] && [ -f "$guess/test/zdtm.py" ] && tree=$guess
fi
[ -n "$tree" ] || tree=$cache/criu/4.1.1
[ -f "$tree/test/zdtm.py" ] || die "no test/zdtm.py under '$tree' (run ci/provision-criu.sh, or pass --tree)"
tree=$(cd "$tree" && pwd)
[ -n "$criu_bin" ] || criu_bin=$tree/criu/criu
[ -x "$criu_bin" ] || die "criu binary '$criu_bin' is missing or not executable"
criu_bin=$(cd "$(dirname "$criu_bin")" && pwd)/$(basename "$criu_bin")

# zdtm.py re-executes helpers through `python3` on PATH: make that the system one, whatever
# venv or pyenv shim the caller has in front.
export PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH VIRTUAL_ENV PYTHONHOME
py=/usr/bin/python3
[ -x "$py" ] || die "$py not found: zdtm.py needs the system Python 3"

apt_install() {
	[ "$install" = 1 ] || die "missing $* (and --no-install given): apt-get install $*"
	log "installing Debian package(s): $*"
	DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "$@" >&2 ||
		{ timeout 600 apt-get update -qq >&2 &&
		  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "$@" >&2; } ||
		die "apt-get install $* failed"
}

prepare() {
	local pkgs=() t
	"$py" -c 'import yaml' 2>/dev/null || pkgs+=(python3-yaml)
	"$py" -c 'import google.protobuf' 2>/dev/null || pkgs+=(python3-protobuf)
	command -v protoc >/dev/null || pkgs+=(protobuf-compiler)
	command -v iptables-restore >/dev/null || pkgs+=(iptables)
	[ ${#pkgs[@]} = 0 ] || apt_install "${pkgs[@]}"

	# pycriu: the .proto -> _pb2.py modules and magic.py come from the tree's own targets.
	if [ ! -f "$tree/lib/pycriu/images/pb.py" ] || [ ! -f "$tree/lib/pycriu/rpc_pb2.py" ]; then
		log "building pycriu (make -C $tree lib)"
		make -C "$tree" -j"$(nproc)" lib >&2 || die "make -C $tree lib failed"
	fi
	# With libzdtmtst.a present zdtm.py skips its own `make -C zdtm/` (every static test).
	make -s -C "$tree/test/zdtm/lib" -j"$(nproc)" >&2 || die "make -C $tree/test/zdtm/lib failed"
	local targets=()
	for t in $tests; do targets+=("$t"); done
	make -s -C "$tree/test/zdtm/static" "${targets[@]}" >&2 ||
		die "building static tests '$tests' in $tree/test/zdtm/static failed"
	make -s -C "$tree/test" umount2 zdtm_ct >&2 || die "make -C $tree/test umount2 zdtm_ct failed"
	(cd "$tree/test" && "$py" -c 'import yaml, pycriu') ||
		die "zdtm.py's imports (yaml, pycriu) fail with $py in $tree/test"
}

flavor_of() {
	[ "$flavor" != auto ] && { echo "$flavor"; return; }
	local desc=$tree/test/zdtm/static/$1.desc
	if [ -f "$desc" ] && grep -q "suid" "$desc"; then echo ns; else echo uns; fi
}

# criu's own time per action: the last "(SS.uuuuuu)" stamp of each log zdtm.py announced
# ("=[log]=> dump/.../dump.log"); several logs of one action add up. Prints
# "criu_dump=S criu_restore=S" (a missing action is left out).
criu_times() {
	local line path action stamp
	declare -A sum=()
	while IFS= read -r line; do
		path=${line#=\[log\]=> }
		action=$(basename "$path" .log)
		[ -f "$tree/test/$path" ] || continue
		stamp=$(grep -o '^([0-9]*\.[0-9]*)' "$tree/test/$path" | tail -n1 | tr -d '()')
		[ -n "$stamp" ] || continue
		sum[$action]=$(awk -v a="${sum[$action]:-0}" -v b="$stamp" 'BEGIN { printf "%.3f", a + b }')
	done < <(grep '^=\[log\]=> ' "$1")
	for action in dump restore; do
		[ -n "${sum[$action]:-}" ] && printf 'criu_%s=%s ' "$action" "${sum[$action]}"
	done
	return 0
}

# One zdtm.py at a time in this tree: it shares dump/, cgroup holders and the ns root.
exec 9>"$tree/test/.zdtmpy-bench.lock"
flock 9

prepare
[ "$prepare_only" = 1 ] && { log "tree $tree prepared"; exit 0; }

logdir=$tree/test/zdtmpy-bench-logs
mkdir -p "$logdir"
"$criu_bin" --version | sed -n 1p | sed "s|^|upstream_zdtm: $criu_bin: |" >&2

failed=0
for t in $tests; do
	f=$(flavor_of "$t")
	walls=()
	for i in $(seq 1 "$repeat"); do
		out=$logdir/$t-$f-$i.log
		start=$EPOCHREALTIME
		rc=0
		rm -rf "$tree/test/dump/zdtm/static/$t"
		# -k always keeps criu's logs (and the small images) for criu_times; removed below.
		(cd "$tree/test" && "$py" ./zdtm.py run -t "zdtm/static/$t" -f "$f" \
			--criu-bin "$criu_bin" -k always) >"$out" 2>&1 || rc=$?
		end=$EPOCHREALTIME
		criu=$(criu_times "$out")
		rm -rf "$tree/test/dump/zdtm/static/$t"
		wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
		# zdtm.py also exits 0 when it skips the test (no such flavour): require its PASS line.
		if [ $rc = 0 ] && grep -q "Test zdtm/static/$t PASS" "$out"; then
			result=PASS
		elif [ $rc = 0 ] && grep -q "^Skipping zdtm/static/$t" "$out"; then
			result=SKIP
		else
			result=FAIL
		fi
		echo "upstream test=zdtm/static/$t flavor=$f run=$i/$repeat wall=$wall result=$result $criu log=$out"
		if [ "$result" = PASS ]; then
			walls+=("$wall")
		else
			failed=1
			log "zdtm/static/$t ($f) run $i: $result; last lines of $out:"
			tail -n 15 "$out" | sed 's/^/    /' >&2
		fi
	done
	if [ ${#walls[@]} -gt 0 ]; then
		median=$(printf '%s\n' "${walls[@]}" | sort -g | awk '{ v[NR] = $1 }
			END { if (NR % 2) printf "%.3f", v[(NR + 1) / 2];
			      else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
		echo "upstream-median test=zdtm/static/$t flavor=$f runs=${#walls[@]} median=$median"
	fi
done
exit $failed
