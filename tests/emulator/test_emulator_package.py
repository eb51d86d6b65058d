"""The emulator as a package of its own (lambda_emulator): the old name vmod_lambda.emulator still
works for one release with a deprecation line, pip installs the emulator alone, and varnishd's
Python home (a staged `make stage`) does not hold it.

Everything runs on 127.0.0.1.
"""

import glob
import http.client
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

import lambda_emulator

from support import ROOT
EXAMPLES = os.path.join(ROOT, "examples")
STAGE = os.environ.get("VMOD_LAMBDA_STAGE", "/var/tmp/vmod-lambda-test")


def clean_env(**extra):
    """The environment without a PYTHONPATH: only what the interpreter itself finds."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def invoke(url, name, payload):
    host, port = url.rsplit("/", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", f"/2015-03-31/functions/{name}/invocations",
                     body=json.dumps(payload).encode())
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def serve(args, cwd, env):
    """Start an emulator command line; (process, URL it printed)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env=env)
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"the emulator did not start: {url}{out}{err}")
    return proc, url


def stop(proc):
    """SIGTERM: the emulator must exit 0; returns what it wrote to stderr."""
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(15) == 0
        return proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# -- the old name, for one release

def test_old_module_name_runs_the_command_line_with_a_deprecation_line():
    r = subprocess.run([sys.executable, "-m", "vmod_lambda.emulator", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env=clean_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: python -m lambda_emulator ")
    assert "NAME=module:handler" in r.stdout
    first = r.stderr.splitlines()[0]
    assert "vmod_lambda.emulator is deprecated" in first
    assert "python -m lambda_emulator" in first
    assert "Traceback" not in r.stderr


def test_old_module_name_serves_functions_like_the_new_one():
    proc, url = serve([sys.executable, "-m", "vmod_lambda.emulator", "--port", "0", "-q",
                       "--path", EXAMPLES, "echo=app:echo"], cwd=ROOT, env=clean_env())
    try:
        assert invoke(url, "echo", {"old": "name"}) == (200, b'{"old": "name"}')
    finally:
        err = stop(proc)
    assert "vmod_lambda.emulator is deprecated" in err.splitlines()[0]
    assert "Traceback" not in err


def test_old_import_path_warns_and_gives_the_same_objects():
    sys.modules.pop("vmod_lambda.emulator", None)
    with pytest.warns(DeprecationWarning, match="import lambda_emulator"):
        old = importlib.import_module("vmod_lambda.emulator")
    sys.modules.pop("vmod_lambda.emulator", None)
    for name in ("Emulator", "FunctionConfig", "EmulatorConfigError", "load_config", "main",
                 "streamify_response", "HttpResponseStream", "ResponseStream",
                 "MAX_REQUEST_BYTES", "MAX_RESPONSE_BYTES"):
        assert getattr(old, name) is getattr(lambda_emulator, name), name


def test_handlers_importing_the_old_path_still_stream(tmp_path):
    """A handler module written for the old name (streamify_response, HttpResponseStream from
    vmod_lambda.emulator) runs unchanged."""
    (tmp_path / "old_style.py").write_text(textwrap.dedent('''
        from vmod_lambda.emulator import HttpResponseStream, streamify_response

        @streamify_response
        def handler(event, response_stream, context):
            stream = HttpResponseStream.from_(response_stream, {"statusCode": 201})
            stream.write("old ")
            stream.write(b"path")
            stream.close()
    '''))
    with lambda_emulator.Emulator({"old": lambda_emulator.FunctionConfig(
            "old_style:handler", path=[str(tmp_path)])}) as emu:
        status, body = invoke(emu.url, "old", {})
    assert status == 200
    assert body == b'{"statusCode":201}' + b"\0" * 8 + b"old path"


# -- installable alone

def test_pip_installs_the_emulator_alone_and_it_serves(tmp_path):
    """pip install ./lambda_emulator (offline, the venv's own setuptools): the package and the
    vmod-lambda-emulator script, which serve functions without vmod_lambda anywhere on the path."""
    src = tmp_path / "src"
    shutil.copytree(os.path.join(ROOT, "lambda_emulator"), src / "lambda_emulator",
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation",
                        "--no-deps", "--no-index", "--target", str(site),
                        str(src / "lambda_emulator")],
                       capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    modules = {n for n in os.listdir(site / "lambda_emulator") if n.endswith(".py")}
    assert modules == {n for n in os.listdir(os.path.join(ROOT, "lambda_emulator"))
                       if n.endswith(".py")}
    assert not (site / "vmod_lambda").exists()
    script = (site / "bin" / "vmod-lambda-emulator").read_text()
    assert "from lambda_emulator.cli import main" in script

    env = clean_env(PYTHONPATH=str(site))
    check = subprocess.run([sys.executable, "-c", "import vmod_lambda"], cwd=str(tmp_path),
                           env=env, capture_output=True, text=True, timeout=60)
    assert check.returncode != 0                  # nothing of the VMOD is importable here
    proc, url = serve([sys.executable, "-m", "lambda_emulator", "--port", "0", "-q",
                       "--path", EXAMPLES, "echo=app:echo"], cwd=str(tmp_path), env=env)
    try:
        assert invoke(url, "echo", {"alone": True}) == (200, b'{"alone": true}')
    finally:
        stop(proc)


# -- not in varnishd's home

def staged_home():
    py = os.path.join(STAGE, "bin", "python3")
    if not os.path.exists(py):
        pytest.skip(f"no staged home in {STAGE}: run `make stage` (make test does)")
    return py


def test_the_staged_home_does_not_hold_the_emulator(tmp_path):
    py = staged_home()
    sites = glob.glob(os.path.join(STAGE, "lib", "python3*", "site-packages"))
    assert sites, f"no site-packages in {STAGE}"
    for site in sites:
        names = os.listdir(site)
        assert "vmod_lambda" in names
        assert not [n for n in names if "emulator" in n.lower()], names
    # The home's interpreter, outside the source tree and without PYTHONPATH, as varnishd has it.
    r = subprocess.run([py, "-c", "import lambda_emulator"], cwd=str(tmp_path), env=clean_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "No module named 'lambda_emulator'" in r.stderr


def test_the_shim_in_the_staged_home_is_harmless(tmp_path):
    """The home keeps vmod_lambda/*.py, the shim with them: importing it fails with a message
    saying where the emulator went, running it exits 1 with that message; the VMOD's own modules
    import as before."""
    py = staged_home()
    env = clean_env()
    r = subprocess.run([py, "-c", "import vmod_lambda.emulator"], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "ImportError: vmod_lambda.emulator: the emulator moved to the lambda_emulator " \
           "package, which is not importable here" in r.stderr
    r = subprocess.run([py, "-m", "vmod_lambda.emulator", "--help"], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stdout == ""
    assert "vmod_lambda.emulator is deprecated" in r.stderr
    assert "pip install ./lambda_emulator" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([py, "-c", "import vmod_lambda.events, vmod_lambda.eventstream, "
                        "vmod_lambda.invoker, vmod_lambda.fetch"], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
