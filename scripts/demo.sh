#!/bin/sh
# make demo: the local Lambda emulator running examples/demo_app.py on 127.0.0.1:9001, and varnishd
# with the installed VMOD and examples/demo.vcl on 127.0.0.1:6081. Ctrl-C stops both.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$here/.venv}
port=${DEMO_PORT:-6081}
workdir=/tmp/vmod-lambda-demo

busy() {
	python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
PY
}

if busy "$port"; then
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet varnish 2>/dev/null; then
		echo "demo: the varnish system service holds port $port; stopping it for the demo"
		echo "      (systemctl start varnish brings it back)"
		systemctl stop varnish
	fi
	if busy "$port"; then
		echo "demo: port $port is in use; free it or run DEMO_PORT=<port> make demo" >&2
		exit 1
	fi
fi
if busy 9001; then
	echo "demo: port 9001 (the emulator's) is in use; free it first" >&2
	exit 1
fi

rm -rf "$workdir"
mkdir -p "$workdir"
rm -f /tmp/vmod-lambda-demo-broken
pids=""
cleanup() {
	trap - INT TERM EXIT
	echo
	echo "demo: stopping"
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	rm -f /tmp/vmod-lambda-demo-broken
	exit 0
}
trap cleanup INT TERM EXIT

export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-demo} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-demo}
export AWS_EC2_METADATA_DISABLED=true

"$venv/bin/python" -m lambda_emulator --port 9001 --path "$here/examples" -q \
	demo-app=demo_app:handler > "$workdir/emulator.out" 2>&1 &
pids="$!"

varnishd -F -n "$workdir/varnish" -a "127.0.0.1:$port" -T 127.0.0.1:0 \
	-f "$here/examples/demo.vcl" -s malloc,64m > "$workdir/varnishd.out" 2>&1 &
pids="$pids $!"

i=0
until varnishadm -n "$workdir/varnish" status 2>/dev/null | grep -q running; do
	i=$((i + 1))
	if [ $i -gt 100 ]; then
		echo "demo: varnishd did not start:" >&2
		tail -20 "$workdir/varnishd.out" >&2
		exit 1
	fi
	sleep 0.2
done

u=http://127.0.0.1:$port
cat <<TXT

vmod-lambda demo: Varnish on $u, in front of the function demo-app (examples/demo_app.py)
served by the local Lambda emulator on http://127.0.0.1:9001. Try, in another terminal:

  curl -i $u/                  # MISS: invokes the function; again within 10 s: HIT, with an Age
  curl -i $u/api/time          # no-store: every request invokes the function
  curl -i -X POST -d '{"hi":1}' -H 'Content-Type: application/json' $u/api/echo
  curl -s $u/image.png | od -c | head -2     # a binary body, byte-exact
  curl -i $u/cookies           # two Set-Cookie headers, not cached
  curl -X POST $u/admin/break  # the function now raises on every call...
  sleep 11; curl -i $u/        # ...yet the expired page is served from grace (stale)
  curl -X POST $u/admin/fix

  varnishlog -n $workdir/varnish -g request -q 'FetchError or Backend_health'
  varnishadm -n $workdir/varnish backend.list -p

Ctrl-C stops both.
TXT
wait
