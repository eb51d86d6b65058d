# The common Lambda answer mapped in C (vmod_lambda_resp.h, vmod_lambda_resp.c): compiled into the
# vmod_lambda._fastresponse extension, used through it.

cdef extern from "vmod_lambda_resp.h" nogil:
    enum:
        LAMBDA_RESP_MAX_HDR
        LAMBDA_RESP_OK
        LAMBDA_RESP_FALLBACK
        LAMBDA_BODY_COPY
        LAMBDA_BODY_JSON
        LAMBDA_BODY_BASE64

    struct lambda_resp_str:
        const char *p
        size_t n
        size_t len
        int esc

    struct lambda_resp_hdr:
        lambda_resp_str name
        lambda_resp_str value

    struct lambda_resp_body:
        const char *p
        size_t n
        size_t len
        int kind
        size_t pos

    struct lambda_resp:
        int status
        lambda_resp_str desc
        unsigned nhdr
        lambda_resp_hdr hdr[1]
        lambda_resp_body body

    const char *const *lambda_resp_dropped()
    int lambda_resp_parse(const char *p, size_t n, lambda_resp *r)
    int lambda_resp_reparse(const char *p, size_t n, lambda_resp *r, const lambda_resp_body *known)
    size_t lambda_resp_reason(const lambda_resp_str *d, char *out)
    size_t lambda_resp_str_copy(const lambda_resp_str *s, char *out)
    size_t lambda_resp_body_read(lambda_resp_body *b, char *out, size_t room)
