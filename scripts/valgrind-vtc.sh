#!/bin/sh
# Run varnishtest files with every varnishd under valgrind memcheck (the cache child is a fork of
# the manager, which memcheck follows), against the staged fresh build (make stage):
#
#   STAGE=/var/tmp/vmod-lambda-test sh scripts/valgrind-vtc.sh [-j N] vtc/*.vtc
#
# Python allocates with plain malloc (PYTHONMALLOC=malloc) so memcheck sees every block; jemalloc
# is intercepted like malloc. Slow: a minute or more per test. Not part of `make test`.
# Prints the memcheck error summary of every process, then the error records whose stack goes
# through this VMOD (libvmod_lambda, the loader, the Cython modules); exits 1 if there are any.
set -eu
: "${STAGE:=/var/tmp/vmod-lambda-test}"
here=$(cd "$(dirname "$0")/.." && pwd)
command -v valgrind >/dev/null || { echo "valgrind-vtc: valgrind is not installed" >&2; exit 2; }

work=$(mktemp -d /tmp/vmod-lambda-valgrind.XXXXXX)
chmod 755 "$work"
mkdir -m 1777 "$work/logs"
mkdir "$work/bin"
cat > "$work/bin/varnishd" <<SH
#!/bin/sh
case " \$* " in
*" -x "*|*" -C "*) exec /usr/sbin/varnishd "\$@";;
esac
exec valgrind --tool=memcheck --error-limit=no --num-callers=40 --track-origins=no \\
	--soname-synonyms=somalloc=*jemalloc* --leak-check=full --show-leak-kinds=definite \\
	--log-file=$work/logs/vg.%p.log /usr/sbin/varnishd "\$@"
SH
chmod 755 "$work/bin" "$work/bin/varnishd"

rc=0
PATH="$work/bin:$PATH" PYTHONMALLOC=malloc STAGE="$STAGE" \
	sh "$here/scripts/run-vtc.sh" -t 1200 "$@" > "$work/vtc.log" 2>&1 || rc=$?
grep -E '^#' "$work/vtc.log" || true
echo "valgrind-vtc: varnishtest exit $rc; memcheck logs in $work/logs"

total=0
for f in "$work"/logs/vg.*.log; do
	n=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$f" | tail -1)
	total=$((total + ${n:-0}))
done
echo "valgrind-vtc: $(ls "$work"/logs | wc -l) processes, $total memcheck errors in all"
# Error records (blank-line separated) that mention this VMOD's code.
ours=$(awk 'BEGIN{RS=""} /vmod_lambda|libvmod_lambda|_director|_handoff|_vmod\.c|lambda_loader/' \
	"$work"/logs/vg.*.log | grep -c '^==' || true)
if [ "$ours" -gt 0 ]; then
	awk 'BEGIN{RS=""; ORS="\n\n"} /vmod_lambda|libvmod_lambda|_director|_handoff|_vmod\.c|lambda_loader/' \
		"$work"/logs/vg.*.log
	echo "valgrind-vtc: records involving vmod-lambda's code: see above"
	exit 1
fi
echo "valgrind-vtc: no memcheck record involves vmod-lambda's code"
exit $rc
