#!/bin/sh
# Run varnishtest files with every varnishd under valgrind memcheck (the cache child is a fork of
# the manager, which memcheck follows), against the staged fresh build (make stage):
#
#   STAGE=/var/tmp/vmod-lambda-test sh scripts/valgrind-vtc.sh [-j N] vtc/*.vtc
#
# jemalloc is intercepted like malloc. The loader's large-allocation hook (mallocx, which memcheck
# does not intercept) is off: VMOD_LAMBDA_BIGALLOC=0, and PYTHONMALLOC set (which the isolated
# interpreter itself ignores: pymalloc keeps blocks of up to 512 bytes, see RELIABILITY.md).
# Slow: a minute or more per test. Not part of `make test`.
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
	--log-file=$work/logs/vg.%p.log /usr/sbin/varnishd "\$@" -p cli_timeout=900
SH
chmod 755 "$work/bin" "$work/bin/varnishd"

rc=0
PATH="$work/bin:$PATH" PYTHONMALLOC=malloc VMOD_LAMBDA_BIGALLOC=0 STAGE="$STAGE" \
	sh "$here/scripts/run-vtc.sh" -k -t 1200 "$@" > "$work/vtc.log" 2>&1 || rc=$?
grep -E '^#' "$work/vtc.log" || true
echo "valgrind-vtc: varnishtest exit $rc; memcheck logs in $work/logs"

# Split the logs into records (memcheck separates them with an empty "==PID== " line); an error
# is any record but the leak records, which are reported apart.
awk '
	/^==[0-9]+== *$/ { if (rec != "") print rec "\n"; rec = ""; next }
	{ rec = rec $0 "\n" }
	END { if (rec != "") print rec }
' "$work"/logs/vg.*.log > "$work/records.txt"
awk 'BEGIN{RS="\n\n"} /(Invalid (read|write|free)|uninitialised|Conditional jump|Syscall param|Mismatched free|overlap|Argument .* of function)/' \
	"$work/records.txt" > "$work/errors.txt"
awk 'BEGIN{RS="\n\n"} /definitely lost in loss record/' "$work/records.txt" > "$work/leaks.txt"
count='BEGIN{RS="\n\n"} NF && $0 ~ re {n++} END{print n+0}'
ours_re='vmod_lambda|libvmod_lambda|_director\.c|_handoff\.c|_vmod\.c|lambda_loader|lambda_shim'
errors=$(awk -v re=. "$count" "$work/errors.txt")
leaks=$(awk -v re=. "$count" "$work/leaks.txt")
ours_err=$(awk -v re="$ours_re" "$count" "$work/errors.txt")
echo "valgrind-vtc: $(ls "$work"/logs | wc -l) processes; $errors memcheck errors ($ours_err through vmod-lambda's code); $leaks definite-leak records"
echo "valgrind-vtc: definite leaks whose stack goes through vmod-lambda's code:"
awk -v re="$ours_re" 'BEGIN{RS="\n\n"; ORS="\n\n"} $0 ~ re' "$work/leaks.txt" | \
	grep -E 'definitely lost|lambda|dlopen' | sed 's/^==[0-9]*==//' | sort | uniq -c | sort -rn | head -20
if [ "$ours_err" -gt 0 ]; then
	awk -v re="$ours_re" 'BEGIN{RS="\n\n"; ORS="\n\n"} $0 ~ re' "$work/errors.txt"
	echo "valgrind-vtc: memcheck errors in vmod-lambda's code: see above"
	exit 1
fi
exit $rc
