#!/bin/bash
# make test-debian13: the README's two commands, `make check` then `make demo`, run as a new user would
# on a fresh Debian 13 (trixie) machine: a debootstrapped root file system, the committed tree cloned
# into it, chroot. Not part of `make check` (about 10 minutes on 2 cores). As root.
#
#   scripts/test-debian13.sh
#
# - The root file system comes from debootstrap (minbase, plus what a new user has before the README's
#   commands: git, make, curl, ca-certificates, procps), from the Debian archive that this machine's apt
#   already uses. It is cached as a tarball in $DEB13_CACHE (re-made weekly or with DEB13_REFRESH=1),
#   and every run unpacks a clean copy into $DEB13_WORK/root.
# - This machine's apt and pip configuration, proxies and CA certificates are copied in (apt.conf.d/99*,
#   /etc/pip.conf, root's pip.conf, PIP_* and *_proxy variables, the CA bundle and
#   /usr/local/share/ca-certificates); local package directories named by the pip configuration
#   (find-links, file:// indexes, such as /opt/wheels) are bind-mounted read-only at the same path, so
#   the chroot reaches the same registries. apt's downloaded .debs are kept in $DEB13_CACHE between
#   runs (the package set installed is the same; only the download is saved).
# - The committed HEAD of the repository this script is in is cloned to /srv/vmod-lambda (uncommitted
#   changes are not tested). Not /root/...: Debian's /root is 0700 and the demo's varnishd reads its
#   -f file as an unprivileged user (issue 14, item 4).
# - /proc, /sys, /dev, /dev/pts, /dev/shm are bound for the run and always unbound again (EXIT trap);
#   processes left running in the chroot are stopped first. A policy-rc.d keeps Debian's varnish
#   package from starting a service: the chroot shares this machine's network.
# - `make demo` runs in the background on a free port (DEMO_PORT); the check is a 200 on /, then a
#   repeated request answered from the cache (X-Cache: HIT), then the demo is stopped.
#
# The log is build/test-debian13.log, the summary build/test-debian13-summary.txt (of the tree this
# script is in). Exit status: 0 when make check and the demo pass.
#
#   DEB13_CACHE     cached root file system and apt archives (default /var/cache/vmod-lambda)
#   DEB13_WORK      the unpacked root (default /var/tmp/vmod-lambda-debian13)
#   DEB13_MIRROR    Debian archive (default: the one apt uses for this machine's release)
#   DEB13_REFRESH=1 make the root file system again
#   DEB13_KEEP=1    keep the unpacked root after the run (for a look inside; mounts are still undone)
#   DEB13_TARGETS   what to run inside (default "check demo")
#   DEB13_CHECK     the make arguments of the "check" step (default "check"; e.g. "stage vtc" to run
#                   the varnishtest suite alone)
set -u

here=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${DEB13_CACHE:-/var/cache/vmod-lambda}
WORK=${DEB13_WORK:-/var/tmp/vmod-lambda-debian13}
TARGETS=${DEB13_TARGETS:-check demo}
CHECK=${DEB13_CHECK:-check}
SUITE=trixie
INCLUDE=ca-certificates,make,git,curl,procps
tarball=$CACHE/debian13-root.tar.gz
root=$WORK/root
src=/srv/vmod-lambda
mkdir -p "$here/build"
log=$here/build/test-debian13.log
summary=$here/build/test-debian13-summary.txt

say() { echo "test-debian13: $*" | tee -a "$log" >&2; }
die() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || { echo "test-debian13: run as root (debootstrap, chroot, mounts)" >&2; exit 1; }
: > "$log"
mkdir -p "$CACHE" && exec 9> "$CACHE/.debian13.lock" || die "cannot write $CACHE"
flock -n 9 || die "another test-debian13 holds $CACHE/.debian13.lock"

# --- the mirror, proxies --------------------------------------------------------------------------------

archive() {   # archive LABEL: the URI apt uses for this machine's release with that label
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(ORIGIN) $(LABEL)' 2>/dev/null |
		awk -v c="$codename" -v l="$1" '$2 ~ "^" c && $3 == "Debian" && $4 == l { sub("/$", "", $1); print $1; exit }'
}
MIRROR=${DEB13_MIRROR:-$(archive Debian)}
[ -n "$MIRROR" ] || die "no Debian archive in apt's sources; set DEB13_MIRROR"
SECURITY=$(archive Debian-Security)
[ -n "$SECURITY" ] || SECURITY=${MIRROR%/debian}/debian-security

# apt's proxy (if any) for debootstrap, which does not read apt's configuration.
apt_proxy=$(apt-config shell P Acquire::http::Proxy 2>/dev/null) && eval "$apt_proxy"
if [ -n "${P:-}" ] && [ -z "${http_proxy:-}" ]; then export http_proxy=$P; fi
unset P

# --- the cached root file system -------------------------------------------------------------------------

fresh_tarball() {
	[ -s "$tarball" ] || return 1
	[ "${DEB13_REFRESH:-0}" = 1 ] && return 1
	[ -z "$(find "$tarball" -mtime +7)" ]
}

if ! fresh_tarball; then
	command -v debootstrap >/dev/null 2>&1 || {
		say "installing debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >> "$log" 2>&1 ||
			die "apt-get install debootstrap failed"
	}
	tmp=$CACHE/debian13-root.tmp
	rm -rf "$tmp"
	say "debootstrap $SUITE from $MIRROR (a few minutes)"
	debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp" "$MIRROR" >> "$log" 2>&1 ||
		die "debootstrap failed (see $log)"
	cat > "$tmp/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	rm -f "$tmp/etc/apt/sources.list"
	rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"*_*
	tar -C "$tmp" --numeric-owner -czf "$tarball.new" . && mv "$tarball.new" "$tarball" ||
		die "could not write $tarball"
	rm -rf "$tmp"
	say "cached $tarball"
fi

# --- a clean copy, the host's configuration, the tree --------------------------------------------------

mounts=""
demo_pgid=""
cleanup() {
	rc=$?
	trap - EXIT INT TERM
	if [ -n "$demo_pgid" ]; then kill -TERM -- "-$demo_pgid" 2>/dev/null; sleep 2; fi
	# Whatever still runs inside the chroot (a demo, a varnishd a test left behind) was started by this
	# run: stop it by pid before the mounts go.
	for sig in TERM KILL; do
		pids=""
		for p in /proc/[0-9]*; do
			[ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && pids="$pids ${p#/proc/}"
		done
		[ -z "$pids" ] && break
		# shellcheck disable=SC2086
		kill -$sig $pids 2>/dev/null
		sleep 2
	done
	# Mounts a test made inside the chroot first (ip netns bind-mounts /run/netns and a file per
	# namespace), deepest first; then this script's own, most recent first.
	for m in $(awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
		case " $mounts " in *" $m "*) continue ;; esac
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || echo "test-debian13: could not unmount $m" >&2
	done
	for m in $mounts; do   # most recent first
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || echo "test-debian13: could not unmount $m" >&2
	done
	if grep -q " $root" /proc/mounts; then
		echo "test-debian13: still mounted under $root; not removing it" >&2
	elif [ "${DEB13_KEEP:-0}" != 1 ]; then
		rm -rf "$root"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if grep -q " $root" /proc/mounts; then die "$root has mounts from an earlier run; unmount them first"; fi
rm -rf "$root"
mkdir -p "$root"
say "unpacking a clean root in $root"
tar -C "$root" --numeric-owner -xzf "$tarball" || die "could not unpack $tarball"

bind() {   # bind SRC DST [ro]
	mkdir -p "$root$2"
	mount --bind "$1" "$root$2" || die "mount --bind $1 $root$2 failed"
	mounts="$root$2 $mounts"
	if [ "${3:-}" = ro ]; then
		mount -o remount,bind,ro "$root$2" || die "read-only remount of $root$2 failed"
	fi
}

# Network, apt and pip as on this machine.
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
for f in /etc/apt/apt.conf.d/99*; do [ -f "$f" ] && cp "$f" "$root/etc/apt/apt.conf.d/"; done
if [ -d /usr/local/share/ca-certificates ]; then
	cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
if [ -f /root/.config/pip/pip.conf ]; then
	mkdir -p "$root/root/.config/pip" && cp /root/.config/pip/pip.conf "$root/root/.config/pip/"
fi
printf '#!/bin/sh\n# test-debian13: no services in this chroot (it shares the network of the machine)\nexit 101\n' \
	> "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"

# The environment inside: pip's and the proxies' variables from here, nothing else.
envs=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb)
for v in $(env | sed -n 's/^\(PIP_[A-Z_]*\|[a-zA-Z_]*_proxy\|[A-Z_]*_PROXY\)=.*/\1/p'); do
	envs+=("$v=$(printenv "$v")")
done

# Local directories pip reads (find-links, file:// indexes), read-only at the same path.
pipdirs=$( { cat /etc/pip.conf /root/.config/pip/pip.conf 2>/dev/null; env | grep '^PIP_'; } |
	grep -o -E '(file://)?/[^ "=,]+' | sed 's,^file://,,' | sort -u)
for d in $pipdirs; do
	# a file:///x/simple index: bind its top directory
	case $d in */simple | */simple/) d=${d%/}; d=${d%/simple} ;; esac
	[ -d "$d" ] || continue
	case $d in /etc/* | /usr/* | /root | /root/*) continue ;; esac
	bind "$d" "$d" ro
	say "bound $d read-only (pip)"
done

# apt's downloads survive the clean copy; nothing else does.
mkdir -p "$CACHE/debian13-apt-archives/partial"
bind "$CACHE/debian13-apt-archives" /var/cache/apt/archives

# The system directories.
bind /proc /proc
bind /sys /sys
bind /dev /dev
bind /dev/pts /dev/pts
[ -d /dev/shm ] && bind /dev/shm /dev/shm

commit=$(git -C "$here" rev-parse HEAD) || die "$here is not a git work tree"
git -C "$here" diff --quiet HEAD 2>/dev/null || say "note: uncommitted changes in $here are not tested"
git clone -q "$here" "$root$src" >> "$log" 2>&1 && git -C "$root$src" checkout -q "$commit" ||
	die "git clone of $here into $root$src failed"
chmod 0755 "$root/srv" "$root$src"
say "cloned $commit to $src"

inside() {   # inside COMMAND...: in the chroot, in the clone, with the environment above
	chroot "$root" /usr/bin/env -i "${envs[@]}" sh -c "cd $src && $*"
}

# --- the README's commands -----------------------------------------------------------------------------

started=$(date -u '+%Y-%m-%d %H:%M UTC')
check_rc=skipped
demo_result=skipped
if case " $TARGETS " in *" check "*) true ;; *) false ;; esac; then
	say "make $CHECK in the chroot (5 to 25 minutes for check; log: $log)"
	t0=$(date +%s)
	# in the background, so that a signal reaches the traps at once (bash runs them after a foreground
	# command only); the EXIT trap stops what still runs in the chroot
	inside make $CHECK >> "$log" 2>&1 &
	wait $!
	check_rc=$?
	check_min=$(( ($(date +%s) - t0 + 30) / 60 ))
	say "make check: exit $check_rc after $check_min min"
fi

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if case " $TARGETS " in *" demo "*) true ;; *) false ;; esac; then
	port=$(free_port)
	lport=$(free_port)      # the emulator's port too: the chroot shares the host's network
	demo_log=$here/build/test-debian13-demo.log
	say "make demo in the chroot on 127.0.0.1:$port (log: $demo_log)"
	setsid chroot "$root" /usr/bin/env -i "${envs[@]}" DEMO_PORT="$port" DEMO_LAMBDA_PORT="$lport" \
		sh -c "cd $src && exec make demo" > "$demo_log" 2>&1 < /dev/null &
	demo_pid=$!
	demo_pgid=$demo_pid
	u=http://127.0.0.1:$port/
	code=000
	for _ in $(seq 1 300); do   # make demo installs first: up to 5 minutes when nothing is built
		kill -0 "$demo_pid" 2>/dev/null || break
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$u" 2>/dev/null)
		[ "$code" = 200 ] && break
		sleep 1
	done
	if [ "$code" != 200 ]; then
		demo_result="FAIL: no 200 on $u (last answer $code$(kill -0 "$demo_pid" 2>/dev/null || echo ', the demo exited'))"
	else
		second=$(curl -s -D - -o /dev/null --max-time 10 "$u" | tr -d '\r')
		{ echo "second request to $u:"; echo "$second"; } >> "$log"
		xcache=$(echo "$second" | sed -n 's/^[Xx]-[Cc]ache: *//p')
		age=$(echo "$second" | sed -n 's/^[Aa]ge: *//p')
		status=$(echo "$second" | head -1)
		case "$status" in
		*" 200"*) if [ "$xcache" = HIT ]; then demo_result="pass (200, then a cache hit: X-Cache: HIT, Age: ${age:-?})"
			else demo_result="FAIL: the repeated request was no cache hit (X-Cache: $xcache, Age: $age)"; fi ;;
		*) demo_result="FAIL: the repeated request answered $status" ;;
		esac
	fi
	kill -INT -- "-$demo_pgid" 2>/dev/null
	for _ in $(seq 1 20); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 1; done
	kill -TERM -- "-$demo_pgid" 2>/dev/null
	wait "$demo_pid" 2>/dev/null
	demo_pgid=""
	{ echo "---- make demo output"; cat "$demo_log"; } >> "$log"
	say "make demo: $demo_result"
fi

# --- the summary -------------------------------------------------------------------------------------------

debian=$(cat "$root/etc/debian_version" 2>/dev/null)
varnish=$(chroot "$root" varnishd -V 2>&1 | sed -n 's/^varnishd (\(varnish-[^ ]*\) .*/\1/p' | head -1)
python=$(chroot "$root" /usr/bin/python3 -V 2>&1)
pkgs=$(chroot "$root" dpkg-query -W -f '${Package} ${Version}, ' varnish python3 2>/dev/null | sed 's/, $//')
pytest_line=$(grep -E '^(=+ )?[0-9]+ (passed|failed).* in [0-9.]+s' "$log" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//')
vtc_line=$(grep '^varnishtest: ' "$log" | tail -1)
vtc_skipped=$(grep -c '^#.* TEST vtc/[^/]*\.vtc skipped' "$log")
[ -n "$vtc_line" ] && vtc_line="$vtc_line, $vtc_skipped skipped"
vtci_line=$(grep '^varnishtest (installed): ' "$log" | tail -1)
docs_line=$(grep '^docs-check: ' "$log" | tail -1)
[ "$check_rc" = 0 ] && check_result=pass || check_result="FAIL (exit $check_rc)"
[ "$check_rc" = skipped ] && check_result=skipped
cat > "$summary" <<EOF
test-debian13: $started, commit $(git -C "$here" rev-parse --short "$commit")
  Debian:      ${debian:-?} ($SUITE, debootstrap from $MIRROR)
  Varnish:     ${varnish:-?}
  Python:      ${python:-?}
  packages:    ${pkgs:-?}
  make check:  $check_result${check_min:+ ($check_min min)}
    pytest:      ${pytest_line:-not run}
    ${vtc_line:-varnishtest: not run}
    ${vtci_line:-varnishtest (installed): not run}
    ${docs_line:-docs-check: not run}
  make demo:   $demo_result
EOF
tee -a "$log" < "$summary"
[ "$check_rc" = 0 ] || [ "$check_rc" = skipped ] || exit 1
case $demo_result in pass* | skipped) exit 0 ;; *) exit 1 ;; esac
