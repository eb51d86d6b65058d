#!/bin/sh
# make demo: the local Lambda emulator running examples/demo_app.py on 127.0.0.1:9001, and varnishd
# with the installed VMOD and examples/demo.vcl on 127.0.0.1:6081. Ctrl-C stops both (exit 0); any
# failure to start, or either process dying, stops the other and exits 1.
#
# Settings (environment): DEMO_PORT (Varnish, 6081), DEMO_LAMBDA_PORT (the emulator, 9001),
# DEMO_WORKDIR (/tmp/vmod-lambda-demo), DEMO_STAGE (a staged build to use instead of the installed
# one: tests/varnish/test_demo.py runs the walkthrough that way).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$here/.venv}
port=${DEMO_PORT:-6081}
lport=${DEMO_LAMBDA_PORT:-9001}
workdir=${DEMO_WORKDIR:-/tmp/vmod-lambda-demo}
# examples/demo_app.py keeps its "broken" flag in the temporary folder.
broken=${TMPDIR:-/tmp}/vmod-lambda-demo-broken

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
if busy "$lport"; then
	echo "demo: port $lport (the emulator's) is in use; free it or run DEMO_LAMBDA_PORT=<port> make demo" >&2
	exit 1
fi

# varnishd reads its -f file as an unprivileged user, who may not read the clone (Debian's /root is
# 0700): the VCL it loads is a copy in the work folder, which is world-readable.
rm -rf "$workdir"
mkdir -p "$workdir"
chmod 0755 "$workdir"
sed "s#http://127.0.0.1:9001#http://127.0.0.1:$lport#" "$here/examples/demo.vcl" > "$workdir/demo.vcl"
chmod 0644 "$workdir/demo.vcl"
vparams=""
if [ -n "${DEMO_STAGE:-}" ]; then
	vparams="-p vmod_path=$DEMO_STAGE/vmods:$(pkg-config --variable=vmoddir varnishapi)"
	export VMOD_LAMBDA_HOME="$DEMO_STAGE"
fi
rm -f "$broken"
pids=""
stop() {
	rc=$1
	trap - INT TERM EXIT
	echo
	echo "demo: stopping"
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	rm -f "$broken"
	exit "$rc"
}
# Ctrl-C (or a TERM) is how the demo ends: exit 0. Anything else that ends it is a failure.
trap 'stop 0' INT TERM
trap 'stop 1' EXIT

export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-demo} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-demo}
export AWS_EC2_METADATA_DISABLED=true

# Both in sessions of their own: a Ctrl-C in the terminal reaches this script only, whose trap then
# stops them (were they in the terminal's process group, they could die before the trap has run,
# and the demo would take their end for a failure).
setsid "$venv/bin/python" -m lambda_emulator --port "$lport" --path "$here/examples" -q \
	demo-app=demo_app:handler > "$workdir/emulator.out" 2>&1 &
emulator=$!
pids="$emulator"

# shellcheck disable=SC2086
setsid varnishd -F -n "$workdir/varnish" -a "127.0.0.1:$port" -T 127.0.0.1:0 $vparams \
	-f "$workdir/demo.vcl" -s malloc,64m > "$workdir/varnishd.out" 2>&1 &
varnishd=$!
pids="$pids $varnishd"

# Up to 30 s for varnishd to run the VCL, but not a moment longer than varnishd itself lives.
i=0
until varnishadm -n "$workdir/varnish" status 2>/dev/null | grep -q running; do
	i=$((i + 1))
	if ! kill -0 "$varnishd" 2>/dev/null || [ $i -gt 150 ]; then
		echo "demo: varnishd did not start:" >&2
		tail -20 "$workdir/varnishd.out" >&2
		exit 1
	fi
	if ! kill -0 "$emulator" 2>/dev/null; then
		echo "demo: the emulator exited:" >&2
		tail -20 "$workdir/emulator.out" >&2
		exit 1
	fi
	sleep 0.2
done

u=http://127.0.0.1:$port
cat <<TXT

vmod-lambda demo: Varnish on $u, in front of the function demo-app (examples/demo_app.py)
served by the local Lambda emulator on http://127.0.0.1:$lport. Try, in another terminal:

  curl -i $u/                  # MISS: invokes the function; again within 10 s: HIT, with an Age
  curl -i $u/api/time          # no-store: every request invokes the function
  curl -i -X POST -d '{"hi":1}' -H 'Content-Type: application/json' $u/api/echo
  curl -s $u/image.png | od -c | head -2     # a binary body, byte-exact
  curl -i $u/cookies           # two Set-Cookie headers, not cached
  curl -X POST $u/admin/break  # the function now raises on every call...
  sleep 11; curl -i $u/        # ...yet the expired page is served from grace (stale)
  curl -X POST $u/admin/fix     # repaired: the probe sees it within 10 s, then fresh pages again

  varnishlog -n $workdir/varnish -g request -q 'FetchError or Backend_health'
  varnishadm -n $workdir/varnish backend.list -p

Ctrl-C stops both.
TXT
# Until Ctrl-C; if either process dies, say so and fail.
while kill -0 "$emulator" 2>/dev/null && kill -0 "$varnishd" 2>/dev/null; do
	sleep 1
done
if kill -0 "$varnishd" 2>/dev/null; then
	echo "demo: the emulator exited:" >&2
	tail -20 "$workdir/emulator.out" >&2
else
	echo "demo: varnishd exited:" >&2
	tail -20 "$workdir/varnishd.out" >&2
fi
exit 1
