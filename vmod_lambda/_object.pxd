# The C side of a lambda.backend() object, shared by _vmod (constructor, methods) and _director
# (the backend). Created and destroyed on the CLI thread; read by Varnish worker threads without the GIL.

from cpython.ref cimport PyObject
from vrt cimport VCL_BACKEND, vrt_backend_probe
from vmod_lambda._handoff cimport lambda_limiter
from vmod_lambda._stats cimport lambda_vsc

cdef enum:
    OBJ_MAGIC = 0x4c4f424a

cdef struct lambda_obj:
    lambda_limiter lim          # first: the limiter's on_idle callback gets the object back by a cast
    unsigned magic
    char *vcl_name
    char *function_name
    char *region
    double timeout
    int pool_size
    int streaming               # backend fetches use InvokeWithResponseStream
    int mux                     # fetches and invoke() are multiplexed jobs (Invoker.multiplexed)
    int fast_event              # the fetch thread builds the event of common requests (_fastevent):
                                # 0 no, 1 "1.0", 2 "1.0-compat"
    int fast_response           # the common JSON answer is mapped in C (_fastresponse)
    PyObject *invoker           # owned reference to a vmod_lambda.invoker.Invoker
    VCL_BACKEND dir             # the director of .backend()
    const vrt_backend_probe *probe_spec     # the VCL's probe (lives as long as the VCL)
    PyObject *prober            # owned reference to a vmod_lambda.probe.Prober, or NULL
    PyObject *probe_report      # owned reference to the report callback given to it
    int probe_healthy           # the probe's verdict, read by healthy() without a lock
    double probe_changed
    lambda_vsc *vsc             # lambda.<vcl_name>.* counters (_stats), shared by name
    int trace                   # invoke() sends the task's X-Amzn-Trace-Id (trace.py)
    # The throttle hold (_throttle.pyx): after a 429, calls fail at once until held_until.
    double throttle_hold        # the argument, seconds (0: off)
    double max_queue_wait       # the argument, seconds (< 0: none, the timeout bounds the wait)
    double held_until           # monotonic; 0: never held (atomic: lambda_time_*)
    double held_until_real      # the same as VTIM_real() time, for log lines
    double held_since_real      # when the hold began, for healthy()'s changed
    PyObject *throttle_hook     # owned reference to the Invoker's on_throttled callable
    lambda_obj *status_next     # the live objects, for lambda.status() (_vmod.pyx, OBJECTS)
