"""scripts/docs.sh check: it compares what the manual says, not who rendered it. A newer rst2man
banner (`.\\" by the Docutils X manpage writer.`) passes; a changed sentence in the man page or the rst
fails with the message that asks for `make docs`. Needs the build's vmodtool output (make builds it)."""

import os
import shutil
import subprocess
import sys

import pytest

from support import ROOT
BUILD = os.path.join(ROOT, "build")


def check(docs):
    return subprocess.run(["sh", os.path.join(ROOT, "scripts", "docs.sh"), "check", BUILD, str(docs),
                           sys.prefix], capture_output=True, text=True)


@pytest.fixture
def docs(tmp_path):
    if not os.path.exists(os.path.join(BUILD, "vmod_lambda.man.rst")):
        pytest.skip("no vmodtool output in build/: run make")
    d = tmp_path / "docs"
    shutil.copytree(os.path.join(ROOT, "docs"), d)
    return d


def test_committed_docs_are_current(docs):
    r = check(docs)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is current" in r.stdout


def test_another_docutils_banner_does_not_matter(docs):
    man = docs / "vmod_lambda.3"
    text = man.read_text()
    assert '.\\" by the Docutils' in text
    man.write_text(text.replace('.\\" by the Docutils', '.\\" by the Docutils 99.9.9 (not the pinned)', 1))
    r = check(docs)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", ["vmod_lambda.3", "vmod_lambda.rst"])
def test_a_changed_sentence_fails(docs, name):
    f = docs / name
    text = f.read_text()
    assert "invoke" in text
    f.write_text(text.replace("invoke", "invokes", 1))
    r = check(docs)
    assert r.returncode == 1
    assert "is stale: run 'make docs'" in r.stderr
