"""vmod-lambda: the Python side of the Varnish VMOD `lambda` (AWS Lambda from VCL).

The Cython modules (_vmod, _handoff) run only inside varnishd; the pure-Python modules (config,
invoker, ...) are importable anywhere and are what pytest tests directly.
"""

__version__ = "0.1.0"
