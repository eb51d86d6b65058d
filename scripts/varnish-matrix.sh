#!/bin/bash
# The compatibility matrix: build the VMOD against several Varnish releases and run the whole vtc suite
# against each of them (`make test-matrix`). Separate from `make check`, which tests the machine's own
# Varnish only.
#
#   scripts/varnish-matrix.sh [TARGET ...]          (default: 7.7 system)
#
# TARGET
#   system         the machine's own Varnish (Debian's package, as `make test` uses it)
#   7.7            Varnish 7.7 from Debian 13 (trixie)'s source package, built into $MATRIX_CACHE
#   sid            the newest Varnish in Debian unstable, or its renamed successor Vinyl Cache
#   SUITE[:PKG]    any Debian suite (and source package), e.g. trixie:varnish
#
# A source target is fetched with apt from Debian's registry through a PRIVATE apt directory
# ($MATRIX_CACHE/apt/SUITE: its own deb-src line, lists and cache; the system's sources are never
# touched), checked against the signed index, patched with Debian's patches when the registry serves
# them, and built with `configure --prefix=$MATRIX_CACHE/PKG-VERSION && make && make install`. Its build
# dependencies are read from the source index and installed with apt from THIS machine's release
# (Debian's packaging tools and test-only dependencies are left out). A prefix that is complete is
# reused: a rerun builds nothing. The system's Varnish is never modified.
#
# Vinyl Cache (Varnish renamed; sid has vinyl-cache 9): Debian's patches let it build and test Varnish
# modules (a varnishd, a vinyltest that runs `varnish v1`); its vtest2 sources come from the suite's
# vtest2-source package (unpacked, not installed); Debian's compatibility links (varnishtest,
# varnishapi.pc, ...) are made in the prefix; its child is jailed to vcache where user vinyl is missing.
#
# The VMOD is built for each target in its own copy of this work tree ($MATRIX_WORK/TARGET/src, tracked
# and untracked-but-not-ignored files, so uncommitted work is tested too), with the target's bin/sbin
# first on PATH and its pkg-config files first on PKG_CONFIG_PATH, staged in $MATRIX_WORK/TARGET/stage,
# and tested with scripts/run-vtc.sh. A table sums up each target; it is also written to
# $MATRIX_WORK/summary.md. The exit status is 0 only if every target built and passed.
#
# Environment
#   MATRIX_CACHE    where Varnish builds, sources and the private apt dirs live (/var/cache/vmod-lambda)
#   MATRIX_WORK     VMOD build copies, staged homes and logs (/var/tmp/vmod-lambda-matrix)
#   MATRIX_MIRROR   Debian's archive (default: the one this machine's apt uses for its own release)
#   MATRIX_REFRESH  1: re-read Debian's source index now (otherwise once a week)
#   MATRIX_REBUILD  1: rebuild the Varnish of every source target even if its prefix is complete
#   VTC_JOBS        parallel varnishtest jobs (2)
#   VENV            the dev venv used to build (default: .venv of this work tree, made by `make deps`)
set -euo pipefail
umask 022

here=$(cd "$(dirname "$0")/.." && pwd)
: "${MATRIX_CACHE:=/var/cache/vmod-lambda}"
: "${MATRIX_WORK:=/var/tmp/vmod-lambda-matrix}"
: "${VTC_JOBS:=2}"
: "${VENV:=$here/.venv}"
PYTHON_SYS=${PYTHON_SYS:-/usr/bin/python3}
JOBS=$(nproc 2>/dev/null || echo 2)
export DEBIAN_FRONTEND=noninteractive

[ $# -gt 0 ] || set -- 7.7 system

log() { printf 'varnish-matrix: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Make every parent of a path traversable by the jailed varnishd child (user vcache).
traversable() {
	local d=$1
	while [ "$d" != "/" ] && [ -n "$d" ]; do
		[ -d "$d" ] && chmod o+x "$d" 2>/dev/null || true
		d=$(dirname "$d")
	done
}

# --- the private apt directory of one suite ---------------------------------------------------------------

apt_opts=()
apt_setup() {   # SUITE [deb-src|deb]
	local suite=$1 type=${2:-deb-src} dir=$MATRIX_CACHE/apt/$1
	[ "$type" = deb-src ] || dir=$dir-$type
	mkdir -p "$dir/sources.list.d" "$dir/lists/partial" "$dir/cache/archives/partial"
	printf '%s [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
		"$type" "$MATRIX_MIRROR" "$suite" > "$dir/sources.list.new"
	cmp -s "$dir/sources.list.new" "$dir/sources.list" && rm "$dir/sources.list.new" ||
		{ mv "$dir/sources.list.new" "$dir/sources.list"; rm -f "$dir/lists/.updated"; }
	apt_opts=(-o "Dir::Etc::sourcelist=$dir/sources.list" -o "Dir::Etc::sourceparts=$dir/sources.list.d"
		-o "Dir::State::lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o "Dir::Cache::pkgcache="
		-o "Dir::Cache::srcpkgcache=" -o "APT::Sandbox::User=root")
	if [ -n "${MATRIX_REFRESH:-}" ] || [ -z "$(find "$dir/lists/.updated" -mtime -7 2>/dev/null)" ]; then
		log "reading Debian's $suite index ($type)"
		if apt-get "${apt_opts[@]}" -qq update; then
			touch "$dir/lists/.updated"
		elif [ -e "$dir/lists/.updated" ]; then
			log "could not refresh the $suite index; using the cached one"
		else
			die "could not read the $suite index ($type) from $MATRIX_MIRROR"
		fi
	fi
}

# One field of a source package's entry in the private index (the first entry: one suite per dir).
src_field() {   # PKG FIELD
	apt-cache "${apt_opts[@]}" showsrc --only-source "$1" 2>/dev/null | awk -v f="$2" '
		/^$/ { if (seen) exit }
		/^Package:/ { seen = 1 }
		!seen { next }
		$0 ~ "^" f ":" { on = 1; sub("^" f ":[ ]*", ""); if ($0 != "") print; next }
		/^[^ ]/ { on = 0 }
		on { sub(/^ /, ""); print }'
}

# --- build dependencies -------------------------------------------------------------------------------------

# Build-Depends of the source entry -> packages of THIS release: the first alternative that exists here;
# debhelper and dh-* (Debian's packaging, not used by configure/make) and test-only (<!nocheck>) ones
# are left out; ones that this release lacks are reported.
resolve_build_deps() {   # PKG
	local raw dep alt name found wanted="" lacking="" deps alts
	raw=$( { src_field "$1" Build-Depends; src_field "$1" Build-Depends-Arch; } | tr '\n' ' ')
	IFS=',' read -r -a deps <<< "$raw"
	for dep in "${deps[@]}"; do
		dep=$(echo "$dep" | sed -E 's/^ +| +$//g')
		[ -n "$dep" ] || continue
		case "$dep" in *'<!nocheck>'*|*'<!nodoc>'*) continue ;; esac
		found=""
		IFS='|' read -r -a alts <<< "$dep"
		for alt in "${alts[@]}"; do
			name=$(echo "$alt" | sed -E 's/\[[^]]*\]//g; s/<[^>]*>//g; s/\([^)]*\)//g; s/:[a-z]+//; s/ //g')
			case "$name" in debhelper|debhelper-compat|dh-*) found=skip; break ;; esac
			if [ -n "$(apt-cache policy "$name" 2>/dev/null | awk '/Candidate:/ && $2 != "(none)" {print $2}')" ] ||
				dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed"; then
				found=$name
				break
			fi
		done
		case "$found" in
		skip) ;;
		"") lacking="$lacking $(echo "$dep" | sed -E 's/ *\([^)]*\)//g')" ;;
		*) wanted="$wanted $found" ;;
		esac
	done
	# Always needed to build from a tarball: the autotools (autogen) and rst2man (configure checks it).
	echo "$wanted autoconf automake libtool make gcc pkgconf python3-docutils" | tr ' ' '\n' | sort -u | tr '\n' ' '

	[ -z "$lacking" ] || log "$1: build dependencies this Debian release lacks:$lacking"
}

apt_install() {   # PKG...
	local p missing=""
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
	done
	[ -n "$missing" ] || return 0
	[ "$(id -u)" = 0 ] || die "need root to install build dependencies:$missing"
	log "installing build dependencies with apt:$missing"
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null; }
}

# --- fetch, unpack, build, install one source target --------------------------------------------------------

# The source package PKG (VERSION: the index's) of the current suite into $MATRIX_CACHE/src/SUITE:
# apt fetches each file and checks it against the signed index (checked again here). The .dsc and the
# Debian tarball may be missing from the registry (404): the orig tarball is what is required.
# Sets ORIG and DEBTAR (empty when not served).
fetch_source() {   # PKG [VERSION]
	local pkg=$1 ver=${2:-} src=$MATRIX_CACHE/src/$SUITE sum size name
	[ -n "$ver" ] || ver=$(src_field "$pkg" Version | head -1)
	[ -n "$ver" ] || die "$SUITE has no source package $pkg"
	mkdir -p "$src"
	(cd "$src" && apt-get "${apt_opts[@]}" source --download-only "$pkg=$ver") >> "$LOGF" 2>&1 ||
		log "$pkg $ver: apt-get source reported missing files (see $LOGF); checking what arrived"
	ORIG="" DEBTAR=""
	while read -r sum size name; do
		[ -n "$name" ] && [ -f "$src/$name" ] || continue
		[ "$(sha256sum "$src/$name" | cut -d' ' -f1)" = "$sum" ] ||
			{ rm -f "$src/$name"; die "$name does not match the index's sha256; removed"; }
		case "$name" in *.orig.tar.*) ORIG=$src/$name ;; *.debian.tar.*) DEBTAR=$src/$name ;; esac
	done < <(src_field "$pkg" Checksums-Sha256)
	[ -n "$ORIG" ] || die "$pkg $ver: the registry served no orig tarball"
	FETCHED_VER=$ver
}

# A path of Debian's package, in $PREFIX.
debian_path() {
	echo "$1" | sed -E "s|^/usr/lib/\\\$\{DEB_HOST_MULTIARCH\}/|$PREFIX/lib/|; s|^/usr/|$PREFIX/|"
}

# Sets PREFIX, SRC_DESC for TARGET; builds unless the prefix is complete.
build_varnish() {   # SUITE PKG...
	local suite=$1 pkg ver="" cand v tree orig debtar n n_links=0 tmp logf target link f t0
	shift
	SUITE=$suite
	apt_setup "$suite"
	for cand in "$@"; do
		v=$(src_field "$cand" Version | head -1)
		[ -n "$v" ] || continue
		if [ -z "$ver" ] || dpkg --compare-versions "$v" gt "$ver"; then pkg=$cand ver=$v; fi
	done
	[ -n "$ver" ] || die "$suite has none of: $*"
	PREFIX=$MATRIX_CACHE/$pkg-$ver
	SRC_DESC="$pkg $ver ($suite source)"
	logf=$MATRIX_CACHE/log/$pkg-$ver.log
	LOGF=$logf
	mkdir -p "$MATRIX_CACHE/log"
	if [ -f "$PREFIX/.vmod-lambda-matrix" ] && [ -z "${MATRIX_REBUILD:-}" ]; then
		SRC_DESC=$(cat "$PREFIX/.vmod-lambda-matrix")
		log "cached: $SRC_DESC in $PREFIX"
		return 0
	fi
	log "building $pkg $ver from Debian $suite into $PREFIX (log: $logf)"
	t0=$(date +%s)
	: > "$logf"

	# Build dependencies first (the index has them even where the registry does not serve the .dsc).
	local deps
	deps=$(resolve_build_deps "$pkg")
	# shellcheck disable=SC2086
	apt_install $deps

	fetch_source "$pkg" "$ver"
	orig=$ORIG debtar=$DEBTAR

	tree=$MATRIX_CACHE/build/$pkg-$ver
	rm -rf "$tree"
	mkdir -p "$tree"
	tar -xf "$orig" -C "$tree" --strip-components=1
	n=0
	if [ -n "${debtar:-}" ]; then
		tar -xf "$debtar" -C "$tree"
		if [ -f "$tree/debian/patches/series" ]; then
			while read -r p _; do
				case "$p" in ''|'#'*) continue ;; esac
				patch -d "$tree" -p1 --batch -s < "$tree/debian/patches/$p" >> "$logf" 2>&1 ||
					die "Debian patch $p does not apply (see $logf)"
				n=$((n + 1))
			done < "$tree/debian/patches/series"
		fi
		SRC_DESC="$SRC_DESC, $n Debian patches"
	else
		SRC_DESC="$SRC_DESC, orig tarball (registry served no Debian patches)"
	fi
	# Vinyl Cache builds its vinyltest from VTest2's sources, a git submodule that its tarball lacks;
	# Debian's package copies them from the package vtest2-source (/usr/src/vtest2), which older
	# releases lack: take that package of the same suite, unpacked into the tree, not installed.
	if [ -d "$tree/bin/vinyltest" ] && [ ! -f "$tree/bin/vinyltest/vtest2/src/vtc_main.c" ]; then
		apt_setup "$suite" deb
		rm -f "$MATRIX_CACHE"/src/"$suite"/vtest2-source_*.deb
		(cd "$MATRIX_CACHE/src/$suite" && apt-get "${apt_opts[@]}" download vtest2-source) >> "$logf" 2>&1 ||
			die "vtest2-source: not in $suite's registry (see $logf)"
		rm -rf "$tree/vtest2-source"
		dpkg-deb -x "$MATRIX_CACHE"/src/"$suite"/vtest2-source_*.deb "$tree/vtest2-source"
		mkdir -p "$tree/bin/vinyltest/vtest2"
		cp -aR "$tree/vtest2-source/usr/src/vtest2/." "$tree/bin/vinyltest/vtest2/"
		SRC_DESC="$SRC_DESC, $(basename "$MATRIX_CACHE"/src/"$suite"/vtest2-source_*.deb .deb)"
		apt_setup "$suite"
	fi

	tmp=$MATRIX_CACHE/build/$pkg-$ver.destdir
	rm -rf "$tmp"
	(
		set -e
		cd "$tree"
		# Debian's patches may change configure.ac and Makefile.am: regenerate, as dh_autoreconf does.
		if [ "$n" -gt 0 ] || [ ! -x configure ]; then autoreconf -fi; fi
		# Debian's fix_vcc_cc patch (Vinyl Cache) takes the VCL compiler from VCC_GCC and VCC_CFLAGS,
		# which debian/rules sets: set them the same way (an unpatched configure ignores them).
		VCC_GCC=gcc VCC_CFLAGS=$(dpkg-buildflags --get CFLAGS 2>/dev/null || echo "-g -O2") \
			./configure --prefix="$PREFIX" --with-jemalloc
		make -j"$JOBS"
		make install DESTDIR="$tmp"
	) >> "$logf" 2>&1 || { tail -n 30 "$logf" >&2; die "$pkg $ver: build failed (see $logf)"; }
	rm -rf "$PREFIX"
	mv "$tmp$PREFIX" "$PREFIX"
	# The links Debian's package adds (Vinyl Cache: varnishtest, varnishapi.pc, ... for Varnish modules).
	for f in "$tree"/debian/*.links; do
		[ -f "$f" ] || continue
		while read -r target link _; do
			case "$target" in /usr/*) ;; *) continue ;; esac
			target=$(debian_path "$target") link=$(debian_path "$link")
			[ -e "$target" ] && [ ! -e "$link" ] || continue
			mkdir -p "$(dirname "$link")"
			ln -s "$(realpath --relative-to="$(dirname "$link")" "$target")" "$link"
			n_links=$((n_links + 1))
		done < "$f"
	done
	[ "$n_links" = 0 ] || SRC_DESC="$SRC_DESC, $n_links Debian compatibility links"
	rm -rf "$tmp" "$tree"
	chmod -R a+rX "$PREFIX"
	traversable "$PREFIX"
	echo "$SRC_DESC" > "$PREFIX/.vmod-lambda-matrix"
	log "built $pkg $ver into $PREFIX in $(( $(date +%s) - t0 ))s"
}

# --- the VMOD and the suite against one Varnish ---------------------------------------------------------------

ROWS=()
FAILED=0
TOTAL_PASSED=0 TOTAL_FAILED=0 TOTAL_SKIPPED=0

add_row() { ROWS+=("$*"); }

test_target() {   # LABEL SRC_DESC [PREFIX]
	local label=$1 desc=$2 prefix=${3:-} work=$MATRIX_WORK/$1 copy stage logf vlog env_path env_pc
	local vver pyver deb passed failed skipped rc t0 vid
	copy=$work/src
	stage=$work/stage
	logf=$work/build.log
	vlog=$work/vtc.log
	mkdir -p "$copy"
	traversable "$work"
	env_path=$PATH
	env_pc=${PKG_CONFIG_PATH:-}
	if [ -n "$prefix" ]; then
		env_path=$prefix/bin:$prefix/sbin:$PATH
		env_pc=$prefix/lib/pkgconfig${env_pc:+:$env_pc}
		# Vinyl Cache jails its child to user "vinyl", which its Debian package creates; where that
		# user is missing, vinyld runs the child unjailed (-jnone) and the suite would not test what
		# the jail demands. Jail it to Varnish's vcache instead: a varnishd first on PATH (varnishtest
		# starts `varnishd`) that is vinyld with `-j linux,user=vcache`.
		rm -rf "$work/bin"
		vver=$(PATH=$env_path varnishd -V 2>&1 | sed -nE 's/^[a-z]+ \(([a-z-]+-[0-9][^ ]*) revision .*/\1/p' | head -1) || true
		if [ -x "$prefix/sbin/vinyld" ] && ! getent passwd vinyl >/dev/null && getent passwd vcache >/dev/null; then
			mkdir -p "$work/bin"
			printf '#!/bin/sh\nexec %s -j linux,user=vcache "$@"\n' "$prefix/sbin/vinyld" > "$work/bin/varnishd"
			chmod 755 "$work/bin/varnishd"
			env_path=$work/bin:$env_path
			desc="$desc; child jailed to vcache (no user vinyl here)"
		fi
	else
		vver=$(varnishd -V 2>&1 | sed -nE 's/^[a-z]+ \(([a-z-]+-[0-9][^ ]*) revision .*/\1/p' | head -1) || true
	fi
	pyver=$("$PYTHON_SYS" -c 'import platform; print(platform.python_version())')
	deb="Debian $(cat /etc/debian_version)"

	# A fresh copy of the work tree (mtimes kept, so an unchanged build is reused); a build for another
	# Varnish build is thrown away.
	rm -rf "$copy/vtc" "$copy/tests"
	(cd "$here" && git ls-files -z --cached --others --exclude-standard |
		xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' _ |
		tar --null -T - -cf -) | tar -xf - -C "$copy"
	vid=$(PKG_CONFIG_PATH=$env_pc pkg-config --modversion --variable=vmodtool varnishapi | tr '\n' ' ') || true
	vid="$vid $(stat -c %Y "$(PKG_CONFIG_PATH=$env_pc pkg-config --variable=vmodtool varnishapi)" || true)"
	if [ "$vid" != "$(cat "$work/varnish-id" 2>/dev/null)" ]; then
		make -C "$copy" --no-print-directory clean BUILD=build >/dev/null
		echo "$vid" > "$work/varnish-id"
	fi

	log "$label: building the VMOD against $vver (log: $logf)"
	if ! PATH=$env_path PKG_CONFIG_PATH=$env_pc make -C "$copy" --no-print-directory \
		VENV="$VENV" STAGE="$stage" stage > "$logf" 2>&1; then
		tail -n 30 "$logf" >&2
		log "$label: the VMOD does not build against $vver (see $logf)"
		add_row "| $label | $vver | $desc | $deb | $pyver | VMOD build failed | | | FAIL |"
		FAILED=1
		return 0
	fi

	log "$label: running vtc/*.vtc against $vver (log: $vlog)"
	t0=$(date +%s)
	rc=0
	(cd "$copy" && PATH=$env_path PKG_CONFIG_PATH=$env_pc STAGE=$stage \
		sh scripts/run-vtc.sh -k -j "$VTC_JOBS" vtc/*.vtc) > "$vlog" 2>&1 || rc=$?
	passed=$(grep -cE '^#[[:space:]]+top[[:space:]]+TEST .* passed' "$vlog" || true)
	failed=$(grep -cE '^#[[:space:]]+top[[:space:]]+TEST .* FAILED' "$vlog" || true)
	skipped=$(grep -cE '^#[[:space:]]+top[[:space:]]+TEST .* skipped' "$vlog" || true)
	log "$label: $passed passed, $failed failed, $skipped skipped ($(( $(date +%s) - t0 ))s)"
	grep -E '^#[[:space:]]+top[[:space:]]+TEST .* (FAILED|skipped)' "$vlog" >&2 || true
	TOTAL_PASSED=$((TOTAL_PASSED + passed)) TOTAL_FAILED=$((TOTAL_FAILED + failed))
	TOTAL_SKIPPED=$((TOTAL_SKIPPED + skipped))
	if [ "$rc" != 0 ] || [ "$failed" != 0 ] || [ "$passed" = 0 ]; then
		FAILED=1
		add_row "| $label | $vver | $desc | $deb | $pyver | $passed | $failed | $skipped | FAIL |"
	else
		add_row "| $label | $vver | $desc | $deb | $pyver | $passed | $failed | $skipped | pass |"
	fi
}

# --- main ----------------------------------------------------------------------------------------------

# The Debian archive that this machine's apt already uses for its own release.
if [ -z "${MATRIX_MIRROR:-}" ]; then
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	MATRIX_MIRROR=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(ORIGIN) $(LABEL)' 2>/dev/null |
		awk -v c="$codename" '$2 == c && $3 == "Debian" && $4 == "Debian" { sub("/$", "", $1); print $1; exit }')
	case " $* " in *" system "*) ;; *) [ -n "$MATRIX_MIRROR" ] ||
		die "no Debian archive for '$codename' in apt's sources; set MATRIX_MIRROR" ;; esac
fi

[ -x "$VENV/bin/python" ] || make -C "$here" --no-print-directory deps VENV="$VENV"
mkdir -p "$MATRIX_CACHE" "$MATRIX_WORK"
exec 9> "$MATRIX_CACHE/.lock"
flock 9
start=$(date +%s)

for target in "$@"; do
	t1=$(date +%s)
	case "$target" in
	system)
		test_target system "Debian package $(dpkg-query -W -f='${Version}' varnish 2>/dev/null || echo '?')"
		;;
	*)
		case "$target" in
		7.7)   suite=trixie pkgs=varnish ;;
		sid)   suite=sid pkgs="varnish vinyl-cache vinyl" ;;
		*:*)   suite=${target%%:*} pkgs=${target#*:} ;;
		*)     suite=$target pkgs="varnish vinyl-cache vinyl" ;;
		esac
		# In a subshell (a failed build ends it, not the matrix), with errexit in force there.
		set +e
		( set -e; build_varnish "$suite" $pkgs )
		rc=$?
		set -e
		if [ "$rc" = 0 ]; then
			MATRIX_REBUILD='' build_varnish "$suite" $pkgs 2>/dev/null   # cached now: sets PREFIX, SRC_DESC
			test_target "$target" "$SRC_DESC" "$PREFIX"
		else
			add_row "| $target | $suite: $pkgs | Varnish build failed | Debian $(cat /etc/debian_version) | | | | | FAIL |"
			FAILED=1
		fi
		;;
	esac
	log "$target: done in $(( $(date +%s) - t1 ))s"
done

{
	echo "Compatibility matrix, $(date -u '+%Y-%m-%d %H:%M UTC'), $(cd "$here" && git describe --always --dirty 2>/dev/null), $(( $(date +%s) - start ))s"
	echo
	echo "| target | Varnish | built from | machine | Python | vtc passed | failed | skipped | result |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	printf '%s\n' "${ROWS[@]}"
	echo
	echo "matrix: $TOTAL_PASSED passed, $TOTAL_FAILED failed, $TOTAL_SKIPPED skipped"
} | tee "$MATRIX_WORK/summary.md"
exit "$FAILED"
