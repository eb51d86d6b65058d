# The CRC-32 of the event stream framing (vmod_lambda_crc32.h, vmod_lambda_crc32.c): compiled into
# the vmod_lambda._crc32 extension, used through it.

from libc.stdint cimport uint32_t

cdef extern from "vmod_lambda_crc32.h" nogil:
    uint32_t lambda_crc32(uint32_t crc, const unsigned char *p, size_t n)
    uint32_t lambda_crc32_table(uint32_t crc, const unsigned char *p, size_t n)
    int lambda_crc32_folds()
