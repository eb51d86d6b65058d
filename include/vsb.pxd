# Declarations from Varnish's vsb.h: the string buffers of CLI output (backend.list).

from vrt cimport vsb

cdef extern from "vmod_lambda_compat.h" nogil:
    int VSB_cat(vsb *s, const char *text)
    int VSB_printf(vsb *s, const char *fmt, ...)
    void VSB_indent(vsb *s, int n)
