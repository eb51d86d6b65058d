"""Build of the Python side of vmod-lambda: the vmod_lambda package and its Cython modules.

`make` drives this (`setup.py build_ext --inplace`) after it generated build/vmod_lambda_build.h; the
Cython modules compile against the installed Varnish's headers (pkg-config varnishapi). The local
Lambda emulator is packaged apart (lambda_emulator/pyproject.toml, with its vmod-lambda-emulator
script), so that it installs without Cython or Varnish and never lands in varnishd's Python home.
"""

import os
import shlex
import subprocess

from Cython.Build import cythonize
from setuptools import Extension, setup


def pkg_config_cflags(pkg):
    out = subprocess.run(["pkg-config", "--cflags-only-I", pkg], check=True, capture_output=True,
                         text=True).stdout
    return [flag[2:] for flag in shlex.split(out)]


BUILD_DIR = os.environ.get("VMOD_LAMBDA_BUILD_DIR", "build")
INCLUDE_DIRS = ["include", BUILD_DIR] + pkg_config_cflags("varnishapi")
HEADERS = [os.path.join("include", f) for f in os.listdir("include") if f.endswith(".h")]
# The C side of a backend fetch (struct busyobj, the VFP), linked into the director only.
FETCH_C = os.path.join("include", "vmod_lambda_fetch.c")
# The common Lambda answer mapped in C (the JSON response object), linked into _fastresponse only.
RESP_C = os.path.join("include", "vmod_lambda_resp.c")
# The CRC-32 of the event stream framing (PCLMULQDQ folding), linked into _crc32 only.
CRC_C = os.path.join("include", "vmod_lambda_crc32.c")
# _netio speaks TLS with OpenSSL (-lssl -lcrypto, Debian's libssl-dev): the same libssl3 that
# Python's own _ssl module loads, so one copy of OpenSSL is in the process.
# Never unloaded: Python does not unload extension modules, and their threads outlive any VCL.
LINK_ARGS = ["-Wl,-z,nodelete"]


# Plain Python modules on the hot path of every fetch, compiled as they are: about a fifth less CPU
# for mapping requests, signing and parsing answers (BENCHMARKS.md). The .py files stay the
# sources, and are installed too; Python imports the compiled module when both are there.
COMPILED_PY = ["events", "transport/direct", "transport/base", "fetch", "invoker", "eventstream"]


def ext(name, *sources, suffix=".pyx", libraries=()):
    return Extension(f"vmod_lambda.{name.replace('/', '.')}", [f"vmod_lambda/{name}{suffix}", *sources],
                     include_dirs=INCLUDE_DIRS, depends=HEADERS, extra_link_args=LINK_ARGS,
                     libraries=list(libraries))


setup(
    name="vmod-lambda",
    version="0.1.0",
    description="The Python side of the Varnish VMOD lambda (AWS Lambda from VCL)",
    license="BSD-3-Clause",
    packages=["vmod_lambda", "vmod_lambda.transport"],
    ext_modules=cythonize([ext("_handoff"), ext("_stats", os.path.join(BUILD_DIR, "VSC_lambda.c")),
                            ext("_director", FETCH_C), ext("_vmod"),
                            ext("_netio", libraries=["ssl", "crypto"]),
                            ext("_sigv4", libraries=["crypto"]), ext("_httphead"),
                            ext("_fastevent"),
                            ext("_fastresponse", RESP_C), ext("_crc32", CRC_C),
                            ext("_request"), ext("_response"), ext("_throttle"), ext("_record"),
                            *(ext(name, suffix=".py") for name in COMPILED_PY)],
                          include_path=["include", "vmod_lambda"],
                          compiler_directives={"language_level": 3}, build_dir=BUILD_DIR),
    zip_safe=False,
)
