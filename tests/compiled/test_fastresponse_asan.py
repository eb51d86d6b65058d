"""include/vmod_lambda_resp.c under AddressSanitizer and UBSan (tests/support/resp_asan_driver.c): every
answer of the test corpora and of the generator, and every prefix of a sample of them (cut answers
end anywhere: inside a string, an escape, a UTF-8 character, a base64 quad), each in an allocation
of exactly its size, parsed and decoded without a read past its end or undefined behaviour."""

import base64
import os
import random
import shutil
import struct
import subprocess
import sys

import pytest

from support import hostile_corpus, response_fuzz

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SUPPORT = os.path.join(os.path.dirname(HERE), "support")


def _corpus():
    out = []
    for name in ("existing.txt", "seed.txt"):
        with open(os.path.join(SUPPORT, "corpus", "response", name)) as f:
            out += [base64.b64decode(line) for line in f if line.strip()]
    out += [c.data() for c in hostile_corpus.CASES]
    out += list(response_fuzz.corpus(99, 5000))
    rng = random.Random(5)
    for p in rng.sample(out, 300):
        if len(p) < 4096:
            out += [p[:i] for i in range(len(p))]
    return out


def test_parser_and_decoder_are_memory_safe(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "resp_asan"
    build = subprocess.run([cc, "-g", "-O1", "-fsanitize=address,undefined",
                            "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer",
                            "-I", os.path.join(ROOT, "include"),
                            os.path.join(SUPPORT, "resp_asan_driver.c"),
                            os.path.join(ROOT, "include", "vmod_lambda_resp.c"), "-o", str(exe)],
                           capture_output=True, text=True)
    if build.returncode != 0 and "sanitize" in build.stderr:
        pytest.skip(f"no sanitizer runtime: {build.stderr.strip()[:200]}")
    assert build.returncode == 0, build.stderr
    payloads = _corpus()
    data = b"".join(struct.pack("<I", len(p)) + p for p in payloads)
    r = subprocess.run([str(exe)], input=data, capture_output=True, timeout=600,
                       env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0"})
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    print(r.stdout.decode().strip())
    assert r.stdout.startswith(f"{len(payloads)} payloads".encode())
