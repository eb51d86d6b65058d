#!/bin/sh
# Copy the vmod_lambda package as varnishd's home runs it (sources and the compiled modules, the
# transport subpackage included; not the emulator, which is a package of its own) into DEST, which
# must not exist yet. Used by install-home.sh and build-deb.sh.
#
#   scripts/copy-package.sh DEST
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
dest=$1
for sub in "" transport; do
	mkdir -p "$dest/$sub"
	cp "$here/vmod_lambda/$sub"/*.py "$here/vmod_lambda/$sub"/*.so "$dest/$sub/"
done
