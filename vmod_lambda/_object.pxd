# The C side of a lambda.backend() object, shared by _vmod (constructor, methods) and _director
# (the backend). Created and destroyed on the CLI thread; read by Varnish worker threads without the GIL.

from cpython.ref cimport PyObject
from vrt cimport VCL_BACKEND
from vmod_lambda._handoff cimport lambda_limiter

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
    PyObject *invoker           # owned reference to a vmod_lambda.invoker.Invoker
    VCL_BACKEND dir             # the director of .backend()
