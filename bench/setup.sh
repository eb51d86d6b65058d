#!/bin/sh
# What `make bench` needs besides the build: nginx with the echo module (the origin, with its 100 ms
# delay) wrk and h2load from Debian, matplotlib and py-spy in the project's venv. Quick when all is there.
#
#   bench/setup.sh VENV
set -eu
venv=${1:-.venv}
here=$(cd "$(dirname "$0")" && pwd)

need=""
command -v nginx >/dev/null 2>&1 || need="$need nginx-light"
[ -e /usr/lib/nginx/modules/ngx_http_echo_module.so ] || need="$need libnginx-mod-http-echo"
command -v wrk >/dev/null 2>&1 || need="$need wrk"
# bench/h2.py: HTTP/2 against HTTP/1.1 keep-alive to an https:// endpoint (issue 23)
command -v h2load >/dev/null 2>&1 || need="$need nghttp2-client"
if [ -n "$need" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "bench/setup.sh: install as root: apt-get install$need" >&2
		exit 1
	fi
	# Debian starts the packaged nginx on port 80 when it can; the benchmark runs its own.
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi
stamp="$venv/.vmod-lambda-bench-deps"
if ! cmp -s "$here/requirements.lock" "$stamp"; then
	"$venv/bin/pip" install -q -r "$here/requirements.lock"
	cp "$here/requirements.lock" "$stamp"
fi
