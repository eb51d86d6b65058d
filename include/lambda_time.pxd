# <time.h> for log lines with a wall-clock time (the throttle hold's "held until").

from posix.types cimport time_t

cdef extern from "<time.h>" nogil:
    cdef struct tm:
        pass
    tm *gmtime_r(const time_t *t, tm *result)
    size_t strftime(char *s, size_t max, const char *fmt, const tm *t)
