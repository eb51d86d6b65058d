# The parts of OpenSSL (libssl, libcrypto; Debian's libssl-dev, OpenSSL 3) that _netio.pyx uses for
# https:// endpoints: one extern block per header, only what the code uses. Several of these are
# macros in the headers (SSL_CTX_set_min_proto_version, SSL_set_tlsext_host_name, SSL_set_mode,
# SSL_CTX_set_session_cache_mode, SSL_CTX_set_app_data...): Cython calls them like functions.

cdef extern from "<openssl/ssl.h>" nogil:
    ctypedef struct SSL_METHOD:
        pass
    ctypedef struct SSL_CTX:
        pass
    ctypedef struct SSL:
        pass
    ctypedef struct SSL_SESSION:
        pass
    ctypedef struct X509_VERIFY_PARAM:
        pass

    const SSL_METHOD *TLS_client_method()
    SSL_CTX *SSL_CTX_new(const SSL_METHOD *method)
    void SSL_CTX_free(SSL_CTX *ctx)
    int SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version)
    unsigned long SSL_CTX_set_options(SSL_CTX *ctx, unsigned long options)
    int SSL_CTX_set_cipher_list(SSL_CTX *ctx, const char *s)
    int SSL_CTX_load_verify_locations(SSL_CTX *ctx, const char *cafile, const char *capath)
    int SSL_CTX_set_default_verify_paths(SSL_CTX *ctx)
    void SSL_CTX_set_verify(SSL_CTX *ctx, int mode, void *callback)
    X509_VERIFY_PARAM *SSL_CTX_get0_param(SSL_CTX *ctx)
    long SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode)
    void SSL_CTX_sess_set_new_cb(SSL_CTX *ctx, int (*new_session_cb)(SSL *, SSL_SESSION *) noexcept nogil)
    int SSL_CTX_set_app_data(SSL_CTX *ctx, void *arg)
    void *SSL_CTX_get_app_data(const SSL_CTX *ctx)

    SSL *SSL_new(SSL_CTX *ctx)
    void SSL_free(SSL *ssl)
    int SSL_set_fd(SSL *ssl, int fd)
    void SSL_set_connect_state(SSL *ssl)
    long SSL_set_mode(SSL *ssl, long mode)
    int SSL_set_tlsext_host_name(SSL *ssl, const char *name)
    X509_VERIFY_PARAM *SSL_get0_param(SSL *ssl)
    SSL_CTX *SSL_get_SSL_CTX(const SSL *ssl)
    int SSL_set_session(SSL *ssl, SSL_SESSION *session)
    int SSL_session_reused(const SSL *ssl)
    int SSL_is_init_finished(const SSL *ssl)
    int SSL_read(SSL *ssl, void *buf, int num)
    int SSL_write(SSL *ssl, const void *buf, int num)
    int SSL_do_handshake(SSL *ssl)
    int SSL_pending(const SSL *ssl)
    int SSL_get_error(const SSL *ssl, int ret)
    int SSL_shutdown(SSL *ssl)
    long SSL_get_verify_result(const SSL *ssl)
    void SSL_SESSION_free(SSL_SESSION *session)
    int SSL_SESSION_is_resumable(const SSL_SESSION *session)

    int TLS1_2_VERSION
    unsigned long SSL_OP_ALL
    unsigned long SSL_OP_NO_COMPRESSION
    unsigned long SSL_OP_IGNORE_UNEXPECTED_EOF
    long SSL_MODE_ENABLE_PARTIAL_WRITE
    long SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
    long SSL_SESS_CACHE_CLIENT
    long SSL_SESS_CACHE_NO_INTERNAL_STORE
    int SSL_VERIFY_PEER
    int SSL_VERIFY_NONE
    int SSL_ERROR_NONE
    int SSL_ERROR_SSL
    int SSL_ERROR_WANT_READ
    int SSL_ERROR_WANT_WRITE
    int SSL_ERROR_SYSCALL
    int SSL_ERROR_ZERO_RETURN

cdef extern from "<openssl/x509_vfy.h>" nogil:
    int X509_VERIFY_PARAM_set1_host(X509_VERIFY_PARAM *param, const char *name, size_t namelen)
    int X509_VERIFY_PARAM_set1_ip_asc(X509_VERIFY_PARAM *param, const char *ipasc)
    void X509_VERIFY_PARAM_set_hostflags(X509_VERIFY_PARAM *param, unsigned int flags)
    int X509_VERIFY_PARAM_set_flags(X509_VERIFY_PARAM *param, unsigned long flags)
    unsigned long X509_V_FLAG_TRUSTED_FIRST
    long X509_V_OK

cdef extern from "<openssl/x509v3.h>" nogil:
    unsigned int X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS
    unsigned int X509_CHECK_FLAG_NEVER_CHECK_SUBJECT

cdef extern from "<openssl/x509.h>" nogil:
    const char *X509_verify_cert_error_string(long n)

cdef extern from "<openssl/err.h>" nogil:
    unsigned long ERR_get_error()
    unsigned long ERR_peek_last_error()
    void ERR_clear_error()
    void ERR_error_string_n(unsigned long e, char *buf, size_t len)

# SHA-256 and HMAC-SHA256 of libcrypto, for the SigV4 signature of the direct transport (_sigv4.pyx).
cdef extern from "<openssl/evp.h>" nogil:
    ctypedef struct EVP_MD:
        pass
    ctypedef struct EVP_MD_CTX:
        pass
    const EVP_MD *EVP_sha256()
    EVP_MD *EVP_MD_fetch(void *libctx, const char *algorithm, const char *properties)
    EVP_MD_CTX *EVP_MD_CTX_new()
    void EVP_MD_CTX_free(EVP_MD_CTX *ctx)
    int EVP_MD_CTX_copy_ex(EVP_MD_CTX *out, const EVP_MD_CTX *inp)
    int EVP_DigestInit_ex2(EVP_MD_CTX *ctx, const EVP_MD *md, const void *params)
    int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *d, size_t cnt)
    int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s)

cdef extern from "<openssl/sha.h>" nogil:
    unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md)

cdef extern from "<openssl/hmac.h>" nogil:
    unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                        const unsigned char *d, size_t n, unsigned char *md,
                        unsigned int *md_len)
