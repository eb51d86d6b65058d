"""The python loader's bigalloc hook outside varnishd (tests/support/bigalloc_driver.c).

The driver is the loader's source plus checks, linked like the loaders: with jemalloc first (the
hook sends big raw allocations to a private arena; every check of the driver runs) and without it
(the libc build: the hook stays off and Python works as before). VMOD_LAMBDA_BIGALLOC=0 and
PYTHONMALLOC turn it off.
"""

import os
import shutil
import subprocess

import pytest

from support import ROOT, SUPPORT


def pkg_config(*args):
    r = subprocess.run(["pkg-config", *args, "python3-embed"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("pkg-config knows no python3-embed")
    return r.stdout.split()


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    cc = os.environ.get("CC", "cc")
    if not shutil.which(cc) or not shutil.which("pkg-config"):
        pytest.skip("no C compiler or pkg-config")
    out = tmp_path_factory.mktemp("bigalloc")
    cflags = ["-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter",
              "-I" + os.path.join(ROOT, "include")] + pkg_config("--cflags")
    libs = pkg_config("--libs") + ["-lpthread"]
    made = {}
    for name, alloc in (("jemalloc", ["-Wl,--no-as-needed", "-l:libjemalloc.so.2"]), ("libc", [])):
        exe = str(out / f"driver_{name}")
        r = subprocess.run([cc, *cflags, "-o", exe, os.path.join(SUPPORT, "bigalloc_driver.c"),
                            *alloc, *libs], capture_output=True, text=True)
        if r.returncode != 0 and name == "jemalloc" and "jemalloc" in r.stderr:
            continue                    # no libjemalloc.so.2 to link with: that case is skipped
        assert r.returncode == 0, r.stderr
        made[name] = exe
    return made


def run(exe, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("VMOD_LAMBDA_BIGALLOC", "PYTHONMALLOC")}
    e.update(env)
    r = subprocess.run([exe], capture_output=True, text=True, env=e, timeout=120)
    assert r.returncode == 0 and r.stdout.endswith("ok\n"), r.stdout + r.stderr
    print(r.stdout)
    return r.stdout.splitlines()[0]


def test_jemalloc_big_blocks_go_to_a_private_arena(build):
    if "jemalloc" not in build:
        pytest.skip("no libjemalloc.so.2")
    assert run(build["jemalloc"]).startswith("state: jemalloc-arena:")


def test_the_warm_cache_can_be_turned_off(build):
    if "jemalloc" not in build:
        pytest.skip("no libjemalloc.so.2")
    assert run(build["jemalloc"], VMOD_LAMBDA_BIGALLOC_CACHE="0").startswith(
        "state: jemalloc-arena:")


def test_jemalloc_hook_can_be_turned_off(build):
    if "jemalloc" not in build:
        pytest.skip("no libjemalloc.so.2")
    assert run(build["jemalloc"], VMOD_LAMBDA_BIGALLOC="0") == "state: off:VMOD_LAMBDA_BIGALLOC=0"
    assert run(build["jemalloc"], PYTHONMALLOC="malloc") == "state: off:PYTHONMALLOC"


def test_glibc_is_left_alone(build):
    assert run(build["libc"]) == "state: off:malloc-is-not-jemalloc"
