# The record of one invocation: what was sent and what the answer said about itself (status, request
# id, executed version, function error, log tail and the billing read from it). One typed record,
# filled by the transports through answer() (the one reader of the answer's x-amz-* headers) and
# read by the counters and log lines (_stats.pyx) and by the VCL side (_vmod.pyx, _director.pyx).

from libc.stdint cimport uint64_t

cdef class InvocationRecord:
    cdef public str invocation_type      # RequestResponse | Event
    cdef public object qualifier         # str or None: the object's
    cdef public Py_ssize_t sent          # payload bytes sent
    cdef public Py_ssize_t received      # payload bytes received
    cdef public double duration          # seconds, from sending to the end of the answer
    cdef public object request_id        # x-amzn-RequestId (None: none)
    cdef public object executed_version  # X-Amz-Executed-Version (None: none)
    cdef public object status            # the HTTP status (None: no answer)
    cdef public object function_error    # X-Amz-Function-Error: Handled | Unhandled (None: none)
    cdef public object trace_id          # the X-Amzn-Trace-Id sent (None: none)
    cdef object _log_result              # X-Amz-Log-Result, base64 (None: none)
    cdef public uint64_t billed_ms       # from the log tail's REPORT line (0: none)
    cdef public bint cold                # the REPORT line has an Init Duration
