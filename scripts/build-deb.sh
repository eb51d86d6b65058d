#!/bin/sh
# Build the binary Debian package vmod-lambda_<version>_<arch>.deb from a staged tree (make deb).
#
#   scripts/build-deb.sh BUILD_DIR OUT_DIR VENV
#
# BUILD_DIR holds a build made with PREFIX=/usr/lib/vmod-lambda (the VMOD's built-in home). The package
# holds what `make install` puts in place, at Debian's places:
#   <vmoddir>/libvmod_lambda.so                 the VMOD (pkg-config --variable=vmoddir varnishapi)
#   /usr/lib/vmod-lambda/                       the Python home: a venv on Debian's python3.X holding the
#                                               pins of requirements-runtime.lock, vmod_lambda and the loaders
#   /usr/share/man/man3/vmod_lambda.3.gz, /usr/share/doc/vmod-lambda/
# Depends, as Debian's own VMOD packages (varnish-modules): varnishabi-strict-<hash> of the Varnish it was
# built against ($ABI strict: the VMOD loads only into that exact varnishd build), and the libraries its
# files link (dpkg-shlibdeps: libc6, libpython3.X, libjemalloc2) plus python3.X (the venv's interpreter).
# Offline with Debian's own tools (dpkg-dev); pip installs from the index or its cache.
set -eu

build=$1
out=$2
venv=$3
here=$(cd "$(dirname "$0")/.." && pwd)
home=/usr/lib/vmod-lambda
py=${PYTHON_SYS:-/usr/bin/python3}

vmoddir=$(pkg-config --variable=vmoddir varnishapi)
abi=$(sed -n 's/^#define VMOD_ABI_Version "\(.*\)"$/\1/p' "$(pkg-config --variable=includedir varnishapi)/varnish/vmod_abi.h")
abi_hash=${abi##* }
[ -n "$abi_hash" ] || { echo "build-deb: no VMOD_ABI_Version in vmod_abi.h" >&2; exit 1; }
pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
upstream=$(sed -n 's/^ *version="\([^"]*\)",$/\1/p' "$here/setup.py")
version=${DEB_VERSION:-$upstream-1}
arch=$(dpkg --print-architecture)

# Built for this home? (the VMOD's default home is compiled in)
grep -q "VMOD_LAMBDA_DEFAULT_HOME \"$home\"" "$build/vmod_lambda_build.h" || {
	echo "build-deb: $build was not built with PREFIX=$home" >&2; exit 1; }

root=$build/deb-root
rm -rf "$root"
umask 022
mkdir -p "$root/DEBIAN" "$root$vmoddir" "$root$home" "$root/usr/share/doc/vmod-lambda" "$root/usr/share/man/man3"

# The home: a venv without pip (nothing in it may point into this build tree), the runtime pins
# installed into its site-packages by the project's pip (same interpreter), compiled for the final path.
"$py" -m venv --without-pip "$root$home"
site=$root$home/lib/python$pyver/site-packages
"$venv/bin/pip" install -q --no-compile --no-deps --target "$site" -r "$here/requirements-runtime.lock"
rm -rf "$site/bin"                                   # console scripts with this tree's shebang
cp "$here/requirements-runtime.lock" "$root$home/.vmod-lambda-runtime-deps"
mkdir -p "$root$home/lib/vmod_lambda"
sh "$here/scripts/copy-package.sh" "$site/vmod_lambda"
install -m 0755 "$build"/libvmod_lambda_loader_*.so "$root$home/lib/vmod_lambda/"
# venv writes the build path into its activate scripts and pyvenv.cfg's command line
grep -rlF "$root" "$root$home" | while read -r f; do sed -i "s|$root||g" "$f"; done
if grep -rqF "$root" "$root$home"; then echo "build-deb: $root left in the home" >&2; exit 1; fi
"$py" -m compileall -q -s "$root" -p / "$root$home/lib" >/dev/null

install -m 0644 "$build/libvmod_lambda.so" "$root$vmoddir/libvmod_lambda.so"
gzip -9n -c "$here/docs/vmod_lambda.3" > "$root/usr/share/man/man3/vmod_lambda.3.gz"
cp "$here/LICENSE" "$root/usr/share/doc/vmod-lambda/copyright"
printf 'vmod-lambda (%s) unstable; urgency=medium\n\n  * Built from %s.\n\n -- vmod-lambda maintainers <vmod-lambda@localhost>  %s\n' \
	"$version" "$(cd "$here" && git describe --always --dirty 2>/dev/null || echo source)" \
	"$(date -R -d @"${SOURCE_DATE_EPOCH:-$(date +%s)}")" | gzip -9n > "$root/usr/share/doc/vmod-lambda/changelog.Debian.gz"
find "$root" -path "$root/DEBIAN" -prune -o -type f -name '*.so' -exec strip --strip-unneeded {} +
chmod -R u+rwX,go+rX,go-w "$root"

# prerm: the bytecode Python may have written next to what the package ships (a root `python` run
# from the home) is not dpkg's; remove it so that removal leaves no directory behind.
cat > "$root/DEBIAN/prerm" <<EOF
#!/bin/sh
set -e
if [ "\$1" = remove ] || [ "\$1" = upgrade ] || [ "\$1" = deconfigure ]; then
	find $home -type d -name __pycache__ -exec rm -rf {} + 2>/dev/null || true
fi
EOF
chmod 0755 "$root/DEBIAN/prerm"

# Library dependencies the Debian way: dpkg-shlibdeps on every ELF file (it wants a debian/control).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/debian"
printf 'Source: vmod-lambda\n\nPackage: vmod-lambda\nArchitecture: any\n' > "$tmp/debian/control"
elves=$(find "$(cd "$root" && pwd)" -path '*/DEBIAN' -prune -o -type f -name '*.so' -print)
# shellcheck disable=SC2086
shlibs=$(cd "$tmp" && dpkg-shlibdeps -O -l"$vmoddir" $elves 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "build-deb: dpkg-shlibdeps found nothing" >&2; exit 1; }
pydep="python$pyver (>= $(dpkg-query -W -f='${Version}' "python$pyver" | sed 's/-[^-]*$//'))"

cat > "$root/DEBIAN/control" <<EOF
Package: vmod-lambda
Version: $version
Architecture: $arch
Maintainer: vmod-lambda maintainers <vmod-lambda@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: varnishabi-strict-$abi_hash, $pydep, $shlibs
Section: web
Priority: optional
Homepage: https://github.com/movableink/vmod-lambda
Description: Varnish module invoking AWS Lambda functions and serving them as backends
 import lambda; in VCL invokes AWS Lambda functions from any subroutine and exposes a
 function as a Varnish backend (cached, coalesced, grace-served like any other).
 Built for $abi; its Python side (boto3) lives in $home, a virtual
 environment on Debian's python$pyver.
EOF

(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | sort | xargs -d '\n' md5sum) \
	> "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/vmod-lambda_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
