# cython: language_level=3
"""CRC-32 for the event stream framing (vmod_lambda/eventstream.py), in C: binascii.crc32's values
(the polynomial of zlib) at about five times its speed, with PCLMULQDQ where the CPU has it
(include/vmod_lambda_crc32.c). A streamed fetch checks a CRC over every byte of its body, which
with zlib was the largest cost of decoding the stream (issue 17, bench/ANALYSIS.md).
tests/compiled/test_crc32.py checks it against binascii.crc32 at every length and alignment."""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport uint32_t

from vmod_lambda_crc32 cimport lambda_crc32, lambda_crc32_folds, lambda_crc32_table

__all__ = ["crc32", "crc32_table", "folds"]


def crc32(data, unsigned int value=0):
    """binascii.crc32(data, value): data any contiguous bytes-like object."""
    cdef Py_buffer view
    cdef uint32_t c
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if view.len >= 1048576:
            with nogil:
                c = lambda_crc32(value, <const unsigned char *>view.buf, <size_t>view.len)
        else:
            c = lambda_crc32(value, <const unsigned char *>view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return c


def crc32_table(data, unsigned int value=0):
    """The same with the table only (the reference of the folding, for the tests)."""
    cdef Py_buffer view
    cdef uint32_t c
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        c = lambda_crc32_table(value, <const unsigned char *>view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return c


def folds():
    """Whether this CPU takes the PCLMULQDQ folding (else the table does it all)."""
    return bool(lambda_crc32_folds())
