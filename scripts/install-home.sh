#!/bin/sh
# Install the Python side of vmod-lambda into a home: a venv made from Debian's python (the one whose
# libpython the loader links) holding boto3 and the vmod_lambda package, plus the python loaders.
#
#   scripts/install-home.sh HOME BUILD_DIR
#
# Everything is made readable by all, and HOME's parents traversable: the varnishd child runs as an
# unprivileged user (vcache) and must read all of it. Quick when HOME is up to date.
set -eu

home=$1
build=$2
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON_SYS:-/usr/bin/python3}

umask 022
if [ ! -x "$home/bin/python3" ]; then
	"$py" -m venv "$home"
fi
req="$here/requirements-runtime.lock"
if ! cmp -s "$req" "$home/.vmod-lambda-runtime-deps"; then
	"$home/bin/pip" install -q -r "$req"
	cp "$req" "$home/.vmod-lambda-runtime-deps"
fi

site=$("$home/bin/python3" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
pkg="$site/vmod_lambda"
rm -rf "$pkg.new"
sh "$here/scripts/copy-package.sh" "$pkg.new"
rm -rf "$pkg"
mv "$pkg.new" "$pkg"

mkdir -p "$home/lib/vmod_lambda"
for f in "$build"/libvmod_lambda_loader_*.so; do
	install -m 0755 "$f" "$home/lib/vmod_lambda/"
done

chmod -R a+rX "$home"
# The child must traverse every parent of the home.
d=$home
while [ "$d" != "/" ] && [ -n "$d" ]; do
	d=$(dirname "$d")
	perm=$(stat -c %A "$d")
	case "$perm" in
	d????????x|d????????t) ;;
	*) chmod o+x "$d" ;;
	esac
done
