# cython: language_level=3
"""The record of one invocation (see _record.pxd): the transports fill it with answer(), the one
place that reads the x-amz-* headers of a Lambda answer, whichever transport received it."""

_parse_tail = None


cdef class InvocationRecord:
    """What one invocation sent and got, for counters, the varnishlog record and VCL. It travels
    with the outcome: InvokeResult.record, StreamResult.record, InvokeError.record."""

    def __init__(self, str invocation_type, qualifier, Py_ssize_t sent, Py_ssize_t received=0,
                 double duration=0.0, request_id=None, executed_version=None, status=None,
                 log_result=None, trace_id=None):
        self.invocation_type = invocation_type
        self.qualifier = qualifier
        self.sent = sent
        self.received = received
        self.duration = duration
        self.request_id = request_id
        self.executed_version = executed_version
        self.status = status
        self.function_error = None
        self.trace_id = trace_id
        self.log_result = log_result

    @property
    def log_result(self):
        """The function's log tail as Lambda sends it (base64), None without; setting it reads
        the billed duration and the cold start from its REPORT line, once (stats.parse_tail)."""
        return self._log_result

    @log_result.setter
    def log_result(self, value):
        global _parse_tail
        self._log_result = value
        self.billed_ms = 0
        self.cold = False
        if value:
            if _parse_tail is None:
                # (stats.py imports the invoker, which imports this module: imported on first use)
                from vmod_lambda.stats import parse_tail
                _parse_tail = parse_tail
            billed, cold = _parse_tail(value)
            self.billed_ms = billed
            self.cold = cold

    def answer(self, status, headers, Py_ssize_t received):
        """The answer of the Invoke API as it came: its status, its headers (a mapping with
        lower-case names) and the payload bytes received. Returns the function error (None:
        none) for the transport to raise."""
        self.status = status
        self.received = received
        self.request_id = headers.get("x-amzn-requestid") or headers.get("x-amz-request-id") \
            or None
        self.executed_version = headers.get("x-amz-executed-version")
        self.log_result = headers.get("x-amz-log-result")
        self.function_error = headers.get("x-amz-function-error") or None
        return self.function_error

    def __repr__(self):
        return (f"InvocationRecord({self.invocation_type!r}, {self.qualifier!r}, sent={self.sent}, "
                f"received={self.received}, status={self.status!r}, "
                f"request_id={self.request_id!r})")
