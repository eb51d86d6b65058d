# CPython's compact-string accessors the SigV4 head builder (_sigv4.pyx) uses: an ASCII str keeps
# its characters as one byte each, readable in place without an encoding step.

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    const char *PyUnicode_AsUTF8AndSize(object o, Py_ssize_t *size) except NULL
