# vmod-lambda: build, install, test, docs.
#
#   make               build libvmod_lambda.so, the python loaders and the Cython modules into build/
#   make install       the VMOD into Varnish's vmod dir, the Python side into $(PREFIX)
#   make test          pytest (tests/) and varnishtest (vtc/) against the fresh build
#   make pytest TESTS=tests/unit   one layer of tests (unit, compiled, varnish, emulator: docs/TESTS.md)
#   make check         every test: `make test`, the docs are current, install, the installed VMOD
#   make docs          docs/vmod_lambda.rst and docs/vmod_lambda.3 from vmod_lambda.vcc
#   make soak          20 minutes of mixed traffic, the child's RSS must stay within 10% (not in test)
#   make valgrind      the varnishtest suite with varnishd under valgrind memcheck (slow, not in test)
#   make lock          refresh the exact pins (*.lock) from the ranges (*.in); installs use only the pins
#   make bench-objects vcl.load of 1, 100 and 1,000 objects into a running varnishd (BENCHMARKS.md)
#   make fuzz-response the C mapping of the common Lambda answer against Python on 100,000 generated
#                      answers (not in test; the test suite runs 3,000)
#   make fresh-check   clone the committed tree into an empty folder and run `make check` and `make demo`
#                      there as a new user would (before each submission)
#
# Every target sets up what it needs first (scripts/setup-deps.sh: apt as root, pip into .venv).

SHELL        := /bin/bash
PYTHON_SYS   ?= /usr/bin/python3
VENV         ?= .venv
VPY          := $(VENV)/bin/python
BUILD        ?= build
PREFIX       ?= /usr/local/lib/vmod-lambda
# Where `make test` stages a world-readable copy of the fresh build for the jailed varnishd child.
STAGE        ?= /var/tmp/vmod-lambda-test
DEPS_STAMP   := $(VENV)/.vmod-lambda-dev-deps

# Facts about the installed Varnish and Python (empty until setup-deps has run; recomputed by the
# sub-make that `all` starts after it).
VMODDIR      ?= $(shell pkg-config --variable=vmoddir varnishapi 2>/dev/null)
VMODTOOL     := $(shell pkg-config --variable=vmodtool varnishapi 2>/dev/null)
VSCTOOL      := $(shell pkg-config --variable=vsctool varnishapi 2>/dev/null)
VARNISH_CFLAGS := $(shell pkg-config --cflags varnishapi 2>/dev/null)
PY_CFLAGS    := $(shell pkg-config --cflags python3-embed 2>/dev/null)
PY_LIBS      := $(shell pkg-config --libs python3-embed 2>/dev/null)
PY_SONAME    := $(shell $(PYTHON_SYS) -c 'import sysconfig; print(sysconfig.get_config_var("INSTSONAME"))' 2>/dev/null)
EXT_SUFFIX   := $(shell $(PYTHON_SYS) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))' 2>/dev/null)

CFLAGS       ?= -O2 -g
WARN         := -Wall -Wextra -Wno-unused-parameter -Werror=implicit-function-declaration
SHIM_SRC     := include/vmod_lambda_shim.c
LOADER_SRC   := include/vmod_lambda_loader.c
# The fetch helpers (struct busyobj, the VFP), compiled into the director's extension (setup.py).
FETCH_SRC    := include/vmod_lambda_fetch.c include/vmod_lambda_resp.c include/vmod_lambda_crc32.c
HEADERS      := $(wildcard include/*.h)
PYX          := $(wildcard vmod_lambda/*.pyx)
PXD          := $(wildcard vmod_lambda/*.pxd include/*.pxd)
PYSRC        := $(wildcard vmod_lambda/*.py vmod_lambda/transport/*.py)
LOADERS      := $(BUILD)/libvmod_lambda_loader_jemalloc.so $(BUILD)/libvmod_lambda_loader_libc.so
# The hot path of a fetch, also compiled (setup.py, COMPILED_PY): the .py stays the source.
HOTPY        := vmod_lambda/events.py vmod_lambda/transport/direct.py vmod_lambda/transport/base.py \
                vmod_lambda/fetch.py vmod_lambda/invoker.py vmod_lambda/eventstream.py
EXTS         := $(patsubst %.pyx,%$(EXT_SUFFIX),$(PYX)) $(patsubst %.py,%$(EXT_SUFFIX),$(HOTPY))

.PHONY: all build deps install install-home stage test check installcheck pytest vtc docs docs-check \
	clean distclean demo test-matrix test-debian13 soak valgrind lock fresh-check test-prometheus \
	grafana-snapshot deb test-deb

all: deps
	@$(MAKE) --no-print-directory build

deps: $(DEPS_STAMP)

$(DEPS_STAMP): scripts/setup-deps.sh requirements-dev.lock
	sh scripts/setup-deps.sh $(VENV)
	touch $@

build: $(BUILD)/libvmod_lambda.so $(LOADERS) $(EXTS)

$(BUILD)/.dir:
	mkdir -p $(BUILD) && touch $@

# vcc_if.[ch] always come from the installed Varnish's own vmodtool: 7.1's and 7.7's differ.
$(BUILD)/vcc_if.c $(BUILD)/vcc_if.h: vmod_lambda.vcc $(BUILD)/.dir
	cd $(BUILD) && $(PYTHON_SYS) $(VMODTOOL) -o vcc_if ../vmod_lambda.vcc
	touch $(BUILD)/config.h

# The counters: VSC_lambda.[ch] from the installed Varnish's vsctool (compiled into vmod_lambda._stats).
$(BUILD)/VSC_lambda.c $(BUILD)/VSC_lambda.h: include/VSC_lambda.vsc $(BUILD)/.dir
	@# Vinyl Cache's vsctool reads vinyl_vsc directives (Varnish's: varnish_vsc)
	if grep -q vinyl_vsc "$(VSCTOOL)"; then sed 's/varnish_vsc/vinyl_vsc/g' include/VSC_lambda.vsc; \
	else cat include/VSC_lambda.vsc; fi > $(BUILD)/VSC_lambda.vsc
	cd $(BUILD) && $(PYTHON_SYS) $(VSCTOOL) -ch VSC_lambda.vsc
	@# vsctool names the counters "LAMBDA.*" (as VBE, MAIN); the module they follow says "lambda.*"
	sed -i 's/^\(static const char vsc_lambda_name\[\] = \)"LAMBDA";/\1"lambda";/' $(BUILD)/VSC_lambda.c
	grep -q 'vsc_lambda_name\[\] = "lambda"' $(BUILD)/VSC_lambda.c

# One id for the three parts of a build, so a child running another build refuses to mix them.
$(BUILD)/vmod_lambda_build.h: vmod_lambda.vcc include/VSC_lambda.vsc $(HEADERS) $(SHIM_SRC) $(LOADER_SRC) $(FETCH_SRC) $(PYX) $(PXD) $(BUILD)/.dir
	id=$$(cat $^ | sha256sum | cut -c1-16); \
	echo "#define VMOD_LAMBDA_BUILD_ID \"$$id\"" > $@.tmp; \
	echo "#define VMOD_LAMBDA_DEFAULT_HOME \"$(PREFIX)\"" >> $@.tmp; \
	echo "#define VMOD_LAMBDA_LIBPYTHON \"$(PY_SONAME)\"" >> $@.tmp; \
	cmp -s $@.tmp $@ && rm $@.tmp || mv $@.tmp $@

# The thin VMOD: no libpython (the VCC compiler process may dlopen it on 7.1).
$(BUILD)/libvmod_lambda.so: $(BUILD)/vcc_if.c $(SHIM_SRC) $(HEADERS) $(BUILD)/vmod_lambda_build.h
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared -I$(BUILD) -Iinclude $(VARNISH_CFLAGS) \
		-o $@ $(BUILD)/vcc_if.c $(SHIM_SRC) -ldl

# The python loaders: NEEDED order is the allocator first, then libpython (see vmod_lambda.vcc).
$(BUILD)/libvmod_lambda_loader_jemalloc.so: $(LOADER_SRC) $(HEADERS)
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared -Iinclude $(PY_CFLAGS) -o $@ $(LOADER_SRC) \
		-Wl,--no-as-needed -l:libjemalloc.so.2 $(PY_LIBS) -lpthread -Wl,-z,nodelete

$(BUILD)/libvmod_lambda_loader_libc.so: $(LOADER_SRC) $(HEADERS)
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared -Iinclude $(PY_CFLAGS) -o $@ $(LOADER_SRC) \
		-Wl,--no-as-needed $(PY_LIBS) -lpthread -Wl,-z,nodelete

$(EXTS) &: $(PYX) $(PXD) $(HOTPY) $(HEADERS) $(FETCH_SRC) $(BUILD)/vmod_lambda_build.h $(BUILD)/VSC_lambda.c setup.py
	VMOD_LAMBDA_BUILD_DIR=$(BUILD) $(VPY) setup.py -q build_ext --inplace --build-temp $(BUILD)/tmp
	touch $(EXTS)

# A home: a venv on Debian's python with boto3, this package and the loaders; readable by all.
install-home: all
	@test -n "$(PREFIX)" || { echo "PREFIX is empty" >&2; exit 1; }
	PYTHON_SYS=$(PYTHON_SYS) sh scripts/install-home.sh "$(PREFIX)" "$(BUILD)"

install: install-home
	install -d "$(DESTDIR)$(VMODDIR)"
	install -m 0644 $(BUILD)/libvmod_lambda.so "$(DESTDIR)$(VMODDIR)/libvmod_lambda.so"
	@echo "installed: $(VMODDIR)/libvmod_lambda.so, Python side in $(PREFIX)"
	@echo "a running varnishd must be restarted to use a new build"

# The fresh build, staged where the jailed child (user vcache) can read it; tests use VMOD_LAMBDA_HOME.
stage: all
	$(MAKE) --no-print-directory install-home PREFIX=$(STAGE)
	install -d -m 0755 $(STAGE)/vmods
	install -m 0644 $(BUILD)/libvmod_lambda.so $(STAGE)/vmods/libvmod_lambda.so

test: stage
	@$(MAKE) --no-print-directory pytest vtc

# Every test: the fresh build (pytest, varnishtest), the committed docs, then `make install` and the
# installed VMOD under varnishd's default jail. Needs root (apt, install).
check: test docs-check
	@$(MAKE) --no-print-directory install
	@$(MAKE) --no-print-directory installcheck

installcheck:
	@INSTALLED=1 sh scripts/run-vtc.sh vtc/installed/*.vtc 2>&1 | tee $(BUILD)/vtc-installed.log; \
	rc=$${PIPESTATUS[0]}; \
	echo "varnishtest (installed): $$(grep -c '^#.* passed' $(BUILD)/vtc-installed.log) passed, $$(grep -c '^#.* FAILED' $(BUILD)/vtc-installed.log) failed"; \
	exit $$rc

# The pytest tests that start varnishd (tests/support/varnish_harness.py) load the build staged in $(STAGE).
# TESTS: every layer by default, or some of them (tests/unit tests/compiled tests/varnish tests/emulator).
# Each layer in a pytest process of its own (tests/unit, compiled, emulator, varnish), for isolation.
# (tests/varnish/test_cluster.py once failed after the compiled layer in one process: a test's thread
# left in accept() on a socket closed under it took the in-process emulator's connection once its
# call was restarted on the reused fd number; tests/support/listeners.py, and tests/conftest.py fails
# a test that leaves such a thread. The layers pass in one process again.)
# TESTS=<paths> runs just those, in one process.
TESTS        ?=
LAYERS       := tests/unit tests/compiled tests/emulator tests/varnish
pytest:
	@if [ -n "$(TESTS)" ]; then \
		VMOD_LAMBDA_STAGE=$(STAGE) $(VPY) -m pytest -q $(TESTS); \
	else \
		rc=0; for layer in $(LAYERS); do \
			echo "pytest: $$layer"; \
			VMOD_LAMBDA_STAGE=$(STAGE) $(VPY) -m pytest -q $$layer || rc=1; \
		done; exit $$rc; \
	fi

VTC_JOBS ?= 2
vtc:
	@STAGE=$(STAGE) sh scripts/run-vtc.sh -j $(VTC_JOBS) vtc/*.vtc 2>&1 | tee $(BUILD)/vtc.log; \
	rc=$${PIPESTATUS[0]}; \
	echo "varnishtest: $$(grep -c '^#.* passed' $(BUILD)/vtc.log) passed, $$(grep -c '^#.* FAILED' $(BUILD)/vtc.log) failed"; \
	exit $$rc

# Prometheus (README, Monitoring): Debian's prometheus-varnish-exporter against varnishd with the fresh
# build (tests/varnish/test_prometheus.py, skipped by `make test` where the package is missing). Installs
# the package (root); Debian enables its service, which starts an exporter on :9131 where services run.
test-prometheus: stage
	@command -v prometheus-varnish-exporter >/dev/null 2>&1 || { \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			prometheus-varnish-exporter >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			prometheus-varnish-exporter >/dev/null; }; }
	VMOD_LAMBDA_STAGE=$(STAGE) $(VPY) -m pytest -q tests/varnish/test_prometheus.py

# docs/grafana-vmod-lambda.png: examples/grafana/vmod-lambda.json's panels from a real 45 s scrape.
grafana-snapshot: test-prometheus
	$(VPY) -m pip install -q -r bench/requirements.lock   # matplotlib, at bench/'s pins
	VMOD_LAMBDA_STAGE=$(STAGE) $(VPY) examples/grafana/snapshot.py docs/grafana-vmod-lambda.png

# The Debian package (README, Install): vmod-lambda_<version>_<arch>.deb in the top directory, built
# with PREFIX=/usr/lib/vmod-lambda in $(DEB_BUILD) (scripts/build-deb.sh). test-deb installs it with apt,
# runs vtc/installed/ against it and checks that remove and purge leave no file behind
# (scripts/test-deb.sh; root; it restores a make-installed VMOD it finds in the vmod dir).
DEB_BUILD  ?= build-deb
DEB_PREFIX := /usr/lib/vmod-lambda
deb: deps
	@$(MAKE) --no-print-directory build BUILD=$(DEB_BUILD) PREFIX=$(DEB_PREFIX)
	PYTHON_SYS=$(PYTHON_SYS) sh scripts/build-deb.sh $(DEB_BUILD) . $(VENV)

test-deb: deb
	sh scripts/test-deb.sh $$(ls -t vmod-lambda_*.deb | head -1) $(DEB_PREFIX)

# The compatibility matrix (README): the vtc suite against Varnish 7.7 built from Debian 13's source
# package (cached in /var/cache/vmod-lambda) and against the machine's own Varnish. Not part of `check`.
test-matrix: deps
	VENV=$(abspath $(VENV)) bash scripts/varnish-matrix.sh $(MATRIX)

# The README's `make check` and `make demo` in a debootstrapped Debian 13 (Varnish 7.7, Python 3.13),
# on the committed HEAD cloned into the chroot. Root; about 10 minutes. Not part of `check`.
test-debian13:
	bash scripts/test-debian13.sh

# Reliability runs (RELIABILITY.md), apart from `make test`: a soak of SOAK_ARGS (default 20 minutes)
# and the vtc suite under valgrind memcheck (VALGRIND_VTC, one to a few minutes per file).
SOAK_ARGS ?= --duration 1200 --warmup 600
soak: stage
	STAGE=$(STAGE) VENV=$(VENV) sh scripts/soak.sh $(SOAK_ARGS)

VALGRIND_VTC ?= vtc/*.vtc
valgrind: stage
	STAGE=$(STAGE) sh scripts/valgrind-vtc.sh -j $(VTC_JOBS) $(VALGRIND_VTC)

# The reference manual, rendered from the .vcc by the installed vmodtool, committed under docs/.
# docs-check fails when the committed copy's text is stale (scripts/docs.sh).
docs: $(BUILD)/vcc_if.c deps
	sh scripts/docs.sh render $(BUILD) docs $(VENV)

docs-check: $(BUILD)/vcc_if.c deps
	sh scripts/docs.sh check $(BUILD) docs $(VENV)

# The README's first command: install, then the emulator with examples/demo_app.py and varnishd
# with examples/demo.vcl on 127.0.0.1:6081.
demo: install
	VENV=$(VENV) sh scripts/demo.sh

# The exact pins of every Python dependency, from the ranges in requirements-*.in and bench/requirements.in.
lock:
	sh scripts/lock.sh

fresh-check:
	sh scripts/fresh-check.sh

clean:
	rm -rf $(BUILD) $(DEB_BUILD) vmod-lambda_*.deb vmod_lambda/*.so vmod_lambda/*.c vmod_lambda/transport/*.so \
		vmod_lambda/transport/*.c .pytest_cache

distclean: clean
	rm -rf $(VENV)

# The C mapping of the common Lambda answer against the Python one on 100,000 generated answers
# (tests/compiled/test_fastresponse.py, tests/support/response_fuzz.py; seed FUZZ_SEED): no difference, no crash.
.PHONY: fuzz-response
FUZZ_N    ?= 100000
FUZZ_SEED ?= 17
fuzz-response: build
	VMOD_LAMBDA_FUZZ_RESPONSE=$(FUZZ_N) VMOD_LAMBDA_FUZZ_SEED=$(FUZZ_SEED) \
		$(VPY) -m pytest -q -s tests/compiled/test_fastresponse.py -k generated

# Benchmarks (bench/): nginx as the one origin, the staged build in varnishd, wrk; results in
# bench/results/, a profile of a Lambda fetch, BENCHMARKS.md and its chart. Under 10 minutes;
# BENCH_ARGS="--quick" for a check; BENCH_ONLY=streaming (or BENCH_ARGS="--only streaming") runs only
# the streaming cases, the report taking the other sections from bench/benchmarks.json.
.PHONY: bench
BENCH_ARGS ?=
bench: stage
	sh bench/setup.sh $(VENV)
	$(VPY) bench/run.py --stage $(STAGE) $(BENCH_ARGS)
	$(VPY) bench/profile.py --stage $(STAGE) --duration 8 --gil --perf --out bench/results/profile.txt
	$(VPY) bench/report.py

# Many objects in one VCL (issue 21, BENCHMARKS.md "Many objects"): vcl.load of 1, 100 and 1,000
# lambda.backend objects into a running varnishd with the staged build (load time, child RSS and
# threads, after load and after discard), then 20 load/discard cycles of the 1,000 (RELIABILITY.md);
# writes its section of BENCHMARKS.md (and bench/OBJECTS.md, which `make bench` keeps).
# About 2 minutes; no traffic, nothing but varnishd.
.PHONY: bench-objects
OBJECTS_ARGS ?= --counts 1,100,1000 --cycles 20
bench-objects: stage
	mkdir -p bench/results
	$(VPY) bench/objects.py --stage $(STAGE) $(OBJECTS_ARGS) --json bench/results/objects.json \
		--markdown --doc BENCHMARKS.md --reliability RELIABILITY.md
