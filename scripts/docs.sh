#!/bin/sh
# Render or check the manual: docs/vmod_lambda.rst and the man page docs/vmod_lambda.3, from the
# vmodtool output in BUILD (generated from vmod_lambda.vcc).
#
#   scripts/docs.sh render|check BUILD DOCS VENV
#
# `check` renders again and compares the text: the rst exactly, the man page without its roff comment
# lines (`.\"`, where rst2man writes its own version banner). vmodtool's rst does not depend on the
# Varnish version (7.1.1 and 7.7.0 render this .vcc byte for byte alike), so the check runs on every
# version; rst2man comes from the pinned docutils of requirements-dev.lock.
set -eu
mode=$1 build=$2 docs=$3 venv=$4
rst2man=$venv/bin/rst2man
[ -x "$rst2man" ] || rst2man=$venv/bin/rst2man.py

render() {
	out=$1
	mkdir -p "$out"
	cp "$build/vmod_lambda.rst" "$out/vmod_lambda.rst"
	"$rst2man" "$build/vmod_lambda.man.rst" > "$out/vmod_lambda.3"
}

# The man page's text: everything but roff comments.
text() {
	grep -v '^\.\\"' "$1"
}

case $mode in
render)
	render "$docs"
	echo "docs: rendered $docs/vmod_lambda.rst and $docs/vmod_lambda.3"
	;;
check)
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	render "$tmp"
	text "$docs/vmod_lambda.3" > "$tmp/committed.3"
	text "$tmp/vmod_lambda.3" > "$tmp/rendered.3"
	if ! diff -u "$docs/vmod_lambda.rst" "$tmp/vmod_lambda.rst" || \
	    ! diff -u "$tmp/committed.3" "$tmp/rendered.3"; then
		echo "docs-check: $docs is stale: run 'make docs' and commit it" >&2
		exit 1
	fi
	echo "docs-check: $docs is current (rst and man page text compared)"
	;;
*)
	echo "usage: $0 render|check BUILD DOCS VENV" >&2
	exit 2
	;;
esac
