#!/bin/sh
# Install what building and testing vmod-lambda needs; quick when all is there.
#
#   scripts/setup-deps.sh [VENV]
#
# apt (as root): Varnish and its headers, Debian's Python with headers and venv, a C toolchain.
# pip, into VENV (default .venv, built on Debian's /usr/bin/python3 so that the interpreter embedded in
# varnishd and the one that builds the Cython module are the same): the exact pins of requirements-dev.lock
# (`make lock` refreshes it from requirements-dev.in).
set -eu

VENV=${1:-.venv}
here=$(cd "$(dirname "$0")/.." && pwd)

# git: the fresh-machine check clones; curl: the demo walkthrough (tests/varnish/test_demo.py) runs its lines;
# iproute2, nftables, procps: the network fault test (tests/varnish/test_netns_faults.py: ip netns, nft, pgrep).
APT_PKGS="varnish libvarnishapi-dev python3 python3-dev python3-venv gcc make pkg-config libjemalloc2 libssl-dev git curl iproute2 nftables procps"
missing=""
for p in $APT_PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "setup-deps: installing Debian packages:$missing"
	if [ "$(id -u)" != 0 ]; then
		echo "setup-deps: need root to install:$missing" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Debian's varnish package starts a varnishd on :6081 that nobody asked for here; tests start their own.
if [ -n "${CI:-}" ] && command -v systemctl >/dev/null 2>&1; then
	systemctl stop varnish >/dev/null 2>&1 || true
fi

stamp="$VENV/.vmod-lambda-dev-deps"
req="$here/requirements-dev.lock"
if [ ! -x "$VENV/bin/python" ]; then
	/usr/bin/python3 -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || ! cmp -s "$req" "$stamp"; then
	echo "setup-deps: installing Python packages into $VENV"
	"$VENV/bin/pip" install -q -r "$req"
	cp "$req" "$stamp"
fi
