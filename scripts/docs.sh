#!/bin/sh
# Render or check the manual: docs/vmod_lambda.rst and the man page docs/vmod_lambda.3, from the
# vmodtool output in BUILD (generated from vmod_lambda.vcc).
#
#   scripts/docs.sh render|check BUILD DOCS VENV
#
# vmodtool's rst output differs slightly between Varnish versions, so docs/GENERATED-BY records the one
# that rendered the committed copy; `check` compares only with that version and says so otherwise.
set -eu
mode=$1 build=$2 docs=$3 venv=$4
version=$(varnishd -V 2>&1 | sed -n 's/.*(varnish-\([0-9.]*\) .*/\1/p' | head -n 1)
rst2man=$venv/bin/rst2man
[ -x "$rst2man" ] || rst2man=$venv/bin/rst2man.py

render() {
	out=$1
	mkdir -p "$out"
	cp "$build/vmod_lambda.rst" "$out/vmod_lambda.rst"
	"$rst2man" "$build/vmod_lambda.man.rst" > "$out/vmod_lambda.3"
	echo "varnish-$version" > "$out/GENERATED-BY"
}

case $mode in
render)
	render "$docs"
	echo "docs: rendered $docs/vmod_lambda.rst and $docs/vmod_lambda.3 (varnish-$version)"
	;;
check)
	if [ "$(cat "$docs/GENERATED-BY" 2>/dev/null)" != "varnish-$version" ]; then
		echo "docs-check: $docs was rendered by $(cat "$docs/GENERATED-BY" 2>/dev/null || echo nothing)," \
		    "this is varnish-$version: not compared"
		exit 0
	fi
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	render "$tmp"
	if ! diff -u "$docs/vmod_lambda.rst" "$tmp/vmod_lambda.rst" || \
	    ! diff -u "$docs/vmod_lambda.3" "$tmp/vmod_lambda.3"; then
		echo "docs-check: $docs is stale: run 'make docs' and commit it" >&2
		exit 1
	fi
	echo "docs-check: $docs is current"
	;;
*)
	echo "usage: $0 render|check BUILD DOCS VENV" >&2
	exit 2
	;;
esac
