"""Debian's prometheus-varnish-exporter against a varnishd (-n workdir) on a free loopback port, and
its text format parsed: for tests/varnish/test_prometheus.py and examples/grafana/snapshot.py."""

import re
import socket
import subprocess
import time
import urllib.request

__all__ = ["EXPORTER", "Exporter", "parse_exposition"]

EXPORTER = "prometheus-varnish-exporter"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_exposition(text):
    """{name: type} and {(name, labels): value} of Prometheus' text format."""
    types, samples = {}, {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)$", line)
        if m:
            types[m.group(1)] = m.group(2)
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
        if m:
            samples[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return types, samples


class Exporter:
    def __init__(self, workdir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.proc = subprocess.Popen([EXPORTER, "-n", workdir, "-raw",
                                      "-web.listen-address", f"127.0.0.1:{self.port}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.scrape()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{EXPORTER} did not start: {self.proc.stdout.read()}")
                time.sleep(0.2)

    def scrape(self):
        with urllib.request.urlopen(self.url, timeout=10) as r:
            return parse_exposition(r.read().decode())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
