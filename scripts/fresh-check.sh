#!/bin/sh
# The fresh-machine check (`make fresh-check`): what a new user does with the README, on the committed
# tree only. Clones HEAD into an empty folder under $HOME (root's home is 0700 on Debian, as it is for a
# user who clones there), then runs the README's two commands in the clone:
#   1. make check   every test, from nothing (.venv made from the lock files);
#   2. make demo    in the background: 200 on the demo port, the same request again a cache HIT, then
#                   Ctrl-C (SIGINT), which must stop it cleanly ("demo: stopping", nothing left running).
# Prints a summary and exits non-zero if either fails. The clone is removed on success and kept (its
# path printed) on failure. Run it before each submission.
#
#   scripts/fresh-check.sh [--no-check]      --no-check: the demo only
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
run_check=1
[ "${1:-}" = "--no-check" ] && run_check=0
port=${DEMO_PORT:-6081}

dir=$(mktemp -d "${HOME:-/root}/vmod-lambda-fresh.XXXXXX")
log=$dir/fresh-check.log
src=$dir/vmod-lambda
rev=$(git -C "$here" rev-parse --short HEAD)
git clone -q "$here" "$src"
git -C "$src" checkout -q "$rev"
echo "fresh-check: $rev cloned into $src (log: $log)"
[ -z "$(git -C "$here" status --porcelain --untracked-files=no)" ] ||
	echo "fresh-check: note: $here has uncommitted changes; they are not part of this check"

check_result="not run"
t0=$(date +%s)
if [ $run_check = 1 ]; then
	echo "fresh-check: make check (about 10 minutes) ..."
	if (cd "$src" && env -u VIRTUAL_ENV make check) > "$log" 2>&1; then
		check_result="passed"
	else
		check_result="FAILED"
	fi
	grep -E '^[0-9]+ (passed|failed)|passed.*in [0-9.]+s|^varnishtest|^docs-check' "$log" | sed 's/^/  /' || true
	echo "fresh-check: make check $check_result ($(( $(date +%s) - t0 )) s)"
fi

demo_result="FAILED"
demo_log=$dir/demo.log
echo "fresh-check: make demo on 127.0.0.1:$port ..."
# A background job of a shell script starts with SIGINT ignored (POSIX), and so would make and the
# demo's shell: --default-signal gives them the Ctrl-C of a terminal back.
(cd "$src" && exec setsid env --default-signal=INT -u VIRTUAL_ENV DEMO_PORT="$port" make demo) \
	> "$demo_log" 2>&1 &
demo=$!
first="" second="" i=0
while [ $i -lt 600 ] && kill -0 "$demo" 2>/dev/null; do
	if grep -q 'Ctrl-C stops both' "$demo_log"; then
		first=$(curl -s -o /dev/null -D - "http://127.0.0.1:$port/" || true)
		second=$(curl -s -o /dev/null -D - "http://127.0.0.1:$port/" || true)
		break
	fi
	i=$((i + 1))
	sleep 1
done
echo "$first" | head -1 | grep -q ' 200' && echo "$second" | grep -qi '^X-Cache: HIT' && demo_result="passed"
echo "  first:  $(echo "$first" | head -1 | tr -d '\r') $(echo "$first" | grep -i '^X-Cache' | tr -d '\r')"
echo "  second: $(echo "$second" | head -1 | tr -d '\r') $(echo "$second" | grep -i '^X-Cache' | tr -d '\r')"
# Ctrl-C, as a user stops it: to the whole process group of make (dash's kill takes no "--").
kill -INT "-$demo" 2>/dev/null || true
i=0
while kill -0 "$demo" 2>/dev/null && [ $i -lt 120 ]; do
	i=$((i + 1))
	sleep 1
done
if kill -0 "$demo" 2>/dev/null; then
	echo "  make demo still runs 120 s after Ctrl-C: killed"
	kill -KILL "-$demo" 2>/dev/null || true
fi
rc=0
wait "$demo" || rc=$?
# make re-raises the SIGINT it got (exit 130), as in a terminal; the demo's own exit is in its log.
case $rc in 0|130) ;; *) echo "  make demo exited $rc after Ctrl-C"; demo_result="FAILED" ;; esac
grep -q 'demo: stopping' "$demo_log" || { echo "  make demo did not say it stopped"; demo_result="FAILED"; }
if grep -q '^demo: .* exited' "$demo_log"; then
	echo "  the demo took the stop for a failure"; demo_result="FAILED"
fi
sleep 1
if ps -eo args | grep -q "^varnishd .*-n /tmp/vmod-lambda-demo/varnish"; then
	echo "  the demo's varnishd still runs after it stopped"; demo_result="FAILED"
fi
echo "fresh-check: make demo $demo_result"

if [ "$check_result" != "FAILED" ] && [ "$demo_result" = passed ]; then
	echo "fresh-check: PASS ($rev, $(. /etc/os-release && echo "$PRETTY_NAME"), $(varnishd -V 2>&1 | head -1))"
	rm -rf "$dir"
	exit 0
fi
echo "fresh-check: FAIL: see $dir (make check: $log, make demo: $demo_log)" >&2
tail -30 "$demo_log" >&2
exit 1
