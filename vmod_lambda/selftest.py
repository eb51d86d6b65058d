"""lambda.selftest(): checks that the embedded interpreter works inside varnishd.

The checks are those that a wrong symbol binding breaks (see vmod_lambda.vcc PITFALLS): zlib and gzip
against varnishd's modified zlib, adler32 against its aborting stub, malloc-heavy work against mixed
heaps. It sends nothing over the network.
"""

import os
import sys


def _zlib():
    import zlib
    data = os.urandom(4096) * 8
    assert zlib.decompress(zlib.compress(data, 6)) == data
    c = zlib.compressobj(9, zlib.DEFLATED, 31)      # gzip framing, as botocore's models use
    packed = c.compress(data) + c.flush()
    d = zlib.decompressobj(47)
    assert d.decompress(packed) + d.flush() == data


def _gzip():
    import gzip
    import io
    data = b"vmod-lambda " * 5000
    assert gzip.decompress(gzip.compress(data)) == data
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as f:
        f.write(data)
    assert gzip.GzipFile(fileobj=io.BytesIO(buf.getvalue())).read() == data


def _adler32():
    import zlib
    assert zlib.adler32(b"abc") == 0x024D0127, hex(zlib.adler32(b"abc"))


def _crc32():
    import zlib
    assert zlib.crc32(b"abc") == 0x352441C2, hex(zlib.crc32(b"abc"))


def _json():
    import json
    doc = {"k": ["v" * 100, 1, 2.5, None, True], "n": {"deep": list(range(100))}}
    assert json.loads(json.dumps(doc)) == doc


def _ssl():
    import ssl
    ctx = ssl.create_default_context()
    assert ctx.cert_store_stats()["x509_ca"] >= 0


def _hashlib():
    import hashlib
    import hmac
    assert hashlib.sha256(b"abc").hexdigest().startswith("ba7816bf")
    assert len(hmac.new(b"k", b"m", hashlib.sha256).digest()) == 32


def _boto3():
    import boto3
    client = boto3.session.Session().client(
        "lambda", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="selftest", aws_secret_access_key="selftest")
    assert client.meta.service_model.service_name == "lambda"


CHECKS = [("zlib", _zlib), ("gzip", _gzip), ("adler32", _adler32), ("crc32", _crc32),
          ("json", _json), ("ssl", _ssl), ("hashlib", _hashlib), ("boto3", _boto3)]


def bigalloc() -> str:
    """Where the python loader sends large raw allocations in this process (its bigalloc hook,
    vmod_lambda.vcc PITFALLS): "jemalloc-arena:N,>=256KiB" (",warm": with its warm cache),
    "off:<why>", or "n/a" outside varnishd."""
    try:
        import ctypes
        state = ctypes.CDLL(None).vmod_lambda_bigalloc_state
    except (ImportError, OSError, AttributeError):
        return "n/a"
    state.restype = ctypes.c_char_p
    return state().decode("ascii", "replace")


def run() -> str:
    passed, failed = [], []
    for name, check in CHECKS:
        try:
            check()
            passed.append(name)
        except BaseException as e:   # a report, not a crash: every failure is named
            failed.append(f"{name} ({type(e).__name__}: {e})")
    py = "python=%d.%d.%d" % sys.version_info[:3]
    if failed:
        return f"FAIL {' '.join(failed)}; passed: {' '.join(passed)}; {py}"
    return f"ok {' '.join(passed)} {py} bigalloc={bigalloc()} prefix={sys.prefix}"
