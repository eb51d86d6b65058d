#!/bin/sh
# Test the Debian package (make test-deb), as root:
#
#   scripts/test-deb.sh vmod-lambda_<version>_<arch>.deb HOME
#
# 1. `apt-get install ./<deb>`; 2. vtc/installed/ against it (plain `import lambda;`, Varnish's vmod dir,
# the package's home HOME, the default jail); 3. `apt-get remove`; 4. install again and `apt-get purge`:
# after each, a
# listing of /usr (but /usr/local), /etc, /opt and /var/lib (but dpkg's, apt's and Varnish's work
# dirs) must equal the listing taken before the install, and none of the package's files may remain.
#
# This machine's vmod dir may hold a libvmod_lambda.so from `make install` (no package's): the package
# would replace it and its removal delete it, so a copy is kept and put back at the end, whatever
# happens. The package is never left installed.
set -eu

[ "$(id -u)" = 0 ] || { echo "test-deb: run as root (apt-get install)" >&2; exit 1; }
deb=$(readlink -f "$1")
home=$2
here=$(cd "$(dirname "$0")/.." && pwd)
so=$(pkg-config --variable=vmoddir varnishapi)/libvmod_lambda.so
work=$(mktemp -d /var/tmp/vmod-lambda-test-deb.XXXXXX)
export DEBIAN_FRONTEND=noninteractive

if dpkg-query -W -f='${Status}' vmod-lambda 2>/dev/null | grep -q installed; then
	echo "test-deb: vmod-lambda is already installed here; not touching it" >&2
	exit 1
fi
if [ -e "$so" ]; then
	if owner=$(dpkg -S "$so" 2>/dev/null); then
		echo "test-deb: $so belongs to ${owner%%:*}" >&2
		exit 1
	fi
	cp -a "$so" "$work/make-installed.so"
	echo "test-deb: $so is a make-installed copy: kept aside, put back at the end"
fi

cleanup() {
	rc=$?
	if dpkg-query -W -f='${Status}' vmod-lambda 2>/dev/null | grep -q installed; then
		apt-get purge -y -qq vmod-lambda >/dev/null 2>&1 || dpkg --purge vmod-lambda >/dev/null 2>&1 || true
	fi
	if [ -e "$work/make-installed.so" ]; then
		install -m 0644 "$work/make-installed.so" "$so.tmp.$$" && mv "$so.tmp.$$" "$so"
		echo "test-deb: the make-installed $so is back"
	fi
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT INT TERM

listing() {
	find /usr /etc /opt /var/lib -xdev \( -path /usr/local -o -path /var/lib/dpkg -o -path /var/lib/apt \
		-o -path /var/lib/varnish -o -path /var/lib/systemd -o -path /var/lib/dhcp \) -prune -o -print \
		2>/dev/null | grep -vxF "$so" | sort
}

listing > "$work/before"

echo "test-deb: apt-get install ./$(basename "$deb")"
(cd "$(dirname "$deb")" && apt-get install -y -qq --no-install-recommends "./$(basename "$deb")" >"$work/apt.log" 2>&1) \
	|| { cat "$work/apt.log" >&2; exit 1; }
dpkg -L vmod-lambda > "$work/files"
echo "test-deb: installed $(grep -c . "$work/files") paths; $(dpkg-query -W -f='${Depends}' vmod-lambda)"
dpkg --verify vmod-lambda
[ -f "$so" ] && [ -x "$home/bin/python3" ] && [ -f "$home/lib/vmod_lambda/libvmod_lambda_loader_libc.so" ]
# The home is Debian's python3.X with the pinned runtime and the VMOD's Python side.
"$home/bin/python3" -c 'import boto3, vmod_lambda.config' 

echo "test-deb: vtc/installed/ against the package"
INSTALLED=1 INSTALLED_PREFIX=$home sh "$here/scripts/run-vtc.sh" "$here"/vtc/installed/*.vtc

# A root python run from the home writes bytecode dpkg does not know about: removal must still be clean.
"$home/bin/python3" -c 'import botocore.session, vmod_lambda.probe' 2>/dev/null || true

check_gone() {
	listing > "$work/after"
	if ! diff -u "$work/before" "$work/after" > "$work/diff"; then
		echo "test-deb: after $1, the file system differs from before the install:" >&2
		grep '^[-+]/' "$work/diff" | head -40 >&2
		exit 1
	fi
	left=$(while read -r f; do [ -d "$f" ] || [ ! -e "$f" ] || echo "$f"; done < "$work/files")
	[ -z "$left" ] || { echo "test-deb: after $1, left: $left" >&2; exit 1; }
	[ ! -e "$home" ] || { echo "test-deb: after $1, $home is still there" >&2; exit 1; }
	echo "test-deb: after $1: $(grep -c . "$work/before") paths listed, none added or removed; $home gone"
}

apt-get remove -y -qq vmod-lambda >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; exit 1; }
check_gone "apt-get remove"
# Without conffiles, remove already forgets the package; purge gets its own round: install, purge.
(cd "$(dirname "$deb")" && apt-get install -y -qq --no-install-recommends "./$(basename "$deb")" >"$work/apt.log" 2>&1) \
	|| { cat "$work/apt.log" >&2; exit 1; }
"$home/bin/python3" -c 'import botocore.session' 2>/dev/null || true
apt-get purge -y -qq vmod-lambda >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; exit 1; }
if dpkg-query -W -f='${db:Status-Abbrev}' vmod-lambda 2>/dev/null | grep -q .; then
	echo "test-deb: dpkg still has a record of vmod-lambda after purge" >&2
	exit 1
fi
check_gone "apt-get purge"
echo "test-deb: passed"
