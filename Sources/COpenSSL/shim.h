// OpenSSL (libssl, libcrypto) for Swift: macros over SSL_CTX_ctrl and friends wrapped as functions,
// and the few certificate walks (names, chains) that are clearer in C than through Swift pointers.
#ifndef STRATA_COPENSSL_SHIM_H
#define STRATA_COPENSSL_SHIM_H
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

static inline int strata_ssl_ctx_set_min_proto_version(SSL_CTX *ctx, int version) {
  return (int)SSL_CTX_set_min_proto_version(ctx, version);
}

static inline int strata_ssl_ctx_set_max_proto_version(SSL_CTX *ctx, int version) {
  return (int)SSL_CTX_set_max_proto_version(ctx, version);
}

static inline int strata_ssl_ctx_get_min_proto_version(SSL_CTX *ctx) {
  return (int)SSL_CTX_get_min_proto_version(ctx);
}

static inline int strata_tls1_3_version(void) { return TLS1_3_VERSION; }
static inline int strata_tls1_2_version(void) { return TLS1_2_VERSION; }

/// Blocking sockets retry internally; a peer's EOF without close_notify reads as a clean close
/// (frames carry their own lengths and checksums, so a truncated stream is caught above TLS).
static inline void strata_ssl_ctx_set_defaults(SSL_CTX *ctx) {
  SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 0);
  /* Read ahead into a 256 KiB buffer: one recv for many records instead of two per 16 KiB record.
     Readers must then ask SSL_has_pending, not the poller, whether bytes wait (TLSSession). */
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, 256 * 1024);
}

/// Servers choose the cipher suite by their own order (TLS_AES_128_GCM_SHA256 first), not the
/// client's: OpenSSL's default order, which `openssl s_client` and most clients send, puts
/// TLS_AES_256_GCM_SHA384 first.
static inline void strata_ssl_ctx_prefer_own_ciphers(SSL_CTX *ctx) {
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
}

/// Asks OpenSSL to hand record encryption to the kernel (the `tls` ULP) after the handshake.
/// Returns 0 when this OpenSSL was built without kernel TLS.
static inline int strata_ssl_ctx_enable_ktls(SSL_CTX *ctx) {
#ifdef SSL_OP_ENABLE_KTLS
  SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS);
  return 1;
#else
  (void)ctx;
  return 0;
#endif
}

/// 1 when the kernel encrypts what this session sends (resp. decrypts what it receives).
static inline int strata_ssl_ktls_send(SSL *ssl) {
#ifndef OPENSSL_NO_KTLS
  return BIO_get_ktls_send(SSL_get_wbio(ssl)) ? 1 : 0;
#else
  (void)ssl;
  return 0;
#endif
}

static inline int strata_ssl_ktls_recv(SSL *ssl) {
#ifndef OPENSSL_NO_KTLS
  return BIO_get_ktls_recv(SSL_get_rbio(ssl)) ? 1 : 0;
#else
  (void)ssl;
  return 0;
#endif
}

/// Reads and writes `descriptor` through two socket BIOs, the write side behind a buffer of
/// `write_buffer` bytes: OpenSSL writes one TLS record (16 KiB) per BIO write, and the buffer turns
/// a run of records into one `send` (fewer system calls and fewer, larger loopback segments).
/// Whoever writes must then flush (`strata_ssl_flush`) before waiting for an answer.
/// Returns 1, or 0 when a BIO could not be made (the session is unchanged then).
static inline int strata_ssl_set_buffered_fd(SSL *ssl, int descriptor, int write_buffer) {
  BIO *reader = BIO_new_socket(descriptor, BIO_NOCLOSE);
  BIO *writer = BIO_new_socket(descriptor, BIO_NOCLOSE);
  BIO *buffer = BIO_new(BIO_f_buffer());
  if (reader == NULL || writer == NULL || buffer == NULL || BIO_set_write_buffer_size(buffer, write_buffer) != 1) {
    BIO_free(reader);
    BIO_free(writer);
    BIO_free(buffer);
    return 0;
  }
  SSL_set_bio(ssl, reader, BIO_push(buffer, writer));
  return 1;
}

/// Sends what the write buffer holds: 1 when all went, 0 when the socket would block (or its
/// send timeout passed), -1 on an error (errno says which).
static inline int strata_ssl_flush(SSL *ssl) {
  BIO *writer = SSL_get_wbio(ssl);
  if (writer == NULL) return 1;
  if (BIO_flush(writer) == 1) return 1;
  return BIO_should_retry(writer) ? 0 : -1;
}

/// Makes the client check that the server's certificate names `host` (an IP address or a DNS
/// name), and sends it as SNI when it is a name.
static inline int strata_ssl_expect_host(SSL *ssl, const char *host) {
  X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
  if (X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1) return 1;
  if (SSL_set_tlsext_host_name(ssl, host) != 1) return 0;
  return SSL_set1_host(ssl, host);
}

/// Copies the peer certificate's subject common name into `buffer` (NUL-terminated); returns its
/// length, or -1 when there is no peer certificate or no common name.
static inline int strata_ssl_peer_common_name(SSL *ssl, char *buffer, int capacity) {
  X509 *cert = SSL_get0_peer_certificate(ssl);
  if (cert == NULL) return -1;
  int length = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buffer, capacity);
  return length < 0 ? -1 : length;
}

/// 1 when `cert` names `identity` as its common name, or as a DNS or IP subject alternative name.
static inline int strata_x509_names(X509 *cert, const char *identity) {
  if (cert == NULL) return 0;
  char name[256];
  int length = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, name, sizeof name);
  if (length >= 0 && strcmp(name, identity) == 0) return 1;
  if (X509_check_ip_asc(cert, identity, 0) == 1) return 1;
  return X509_check_host(cert, identity, strlen(identity), X509_CHECK_FLAG_NO_WILDCARDS, NULL) == 1;
}

/// 1 when the peer presented a certificate that names `identity` (as `strata_x509_names`).
static inline int strata_ssl_peer_names(SSL *ssl, const char *identity) {
  return strata_x509_names(SSL_get0_peer_certificate(ssl), identity);
}

/// Verifies the peer's certificate (with the chain it sent) against `anchors` alone: 1 when it
/// chains to one of them and is valid now, 0 when not, -1 when there is no peer certificate.
static inline int strata_ssl_peer_verifies_against(SSL *ssl, X509_STORE *anchors) {
  X509 *cert = SSL_get0_peer_certificate(ssl);
  if (cert == NULL) return -1;
  X509_STORE_CTX *context = X509_STORE_CTX_new();
  if (context == NULL) return 0;
  int verified = 0;
  if (X509_STORE_CTX_init(context, anchors, cert, SSL_get_peer_cert_chain(ssl)) == 1) {
    verified = X509_verify_cert(context) == 1 ? 1 : 0;
  }
  X509_STORE_CTX_free(context);
  return verified;
}

/// Loads the PEM certificates of `path` into a new store (NULL when none could be read).
static inline X509_STORE *strata_x509_store_from_file(const char *path) {
  X509_STORE *store = X509_STORE_new();
  if (store == NULL) return NULL;
  if (X509_STORE_load_file(store, path) != 1) {
    X509_STORE_free(store);
    return NULL;
  }
  return store;
}

/// Loads the PEM certificates of `pem` (`length` bytes) into a new store (NULL when it holds none).
static inline X509_STORE *strata_x509_store_from_pem(const char *pem, int length) {
  BIO *bio = BIO_new_mem_buf(pem, length);
  if (bio == NULL) return NULL;
  X509_STORE *store = X509_STORE_new();
  int added = 0;
  X509 *cert;
  while (store != NULL && (cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    if (X509_STORE_add_cert(store, cert) == 1) added += 1;
    X509_free(cert);
  }
  BIO_free(bio);
  ERR_clear_error();
  if (store != NULL && added == 0) {
    X509_STORE_free(store);
    return NULL;
  }
  return store;
}

/// What `strata_verify_certificate_pem` found.
#define STRATA_CERT_VALID 0
#define STRATA_CERT_UNREADABLE 1
#define STRATA_CERT_UNTRUSTED 2
#define STRATA_CERT_EXPIRED 3
#define STRATA_CERT_NOT_YET_VALID 4
#define STRATA_CERT_WRONG_IDENTITY 5

/// Verifies the certificate chain `pem` (leaf first, then intermediates) against `anchors` alone,
/// at time `now` (Unix seconds), and checks that the leaf names `identity` (as
/// `strata_x509_names`). On failure `reason` holds words for the log. Touches no global state
/// beyond OpenSSL's error queue (cleared).
static inline int strata_verify_certificate_pem(
  const char *pem, int length, X509_STORE *anchors, const char *identity, long long now, char *reason, int capacity
) {
  reason[0] = 0;
  BIO *bio = BIO_new_mem_buf(pem, length);
  if (bio == NULL) return STRATA_CERT_UNREADABLE;
  X509 *leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
  STACK_OF(X509) *chain = sk_X509_new_null();
  X509 *cert;
  while (leaf != NULL && chain != NULL && (cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    if (sk_X509_push(chain, cert) <= 0) X509_free(cert);
  }
  BIO_free(bio);
  ERR_clear_error();
  int result = STRATA_CERT_UNREADABLE;
  X509_STORE_CTX *context = leaf != NULL && chain != NULL ? X509_STORE_CTX_new() : NULL;
  if (context != NULL && X509_STORE_CTX_init(context, anchors, leaf, chain) == 1) {
    X509_STORE_CTX_set_time(context, 0, (time_t)now);
    if (X509_verify_cert(context) == 1) {
      result = strata_x509_names(leaf, identity) ? STRATA_CERT_VALID : STRATA_CERT_WRONG_IDENTITY;
    } else {
      int error = X509_STORE_CTX_get_error(context);
      snprintf(reason, (size_t)capacity, "%s", X509_verify_cert_error_string(error));
      result = error == X509_V_ERR_CERT_HAS_EXPIRED ? STRATA_CERT_EXPIRED
        : error == X509_V_ERR_CERT_NOT_YET_VALID ? STRATA_CERT_NOT_YET_VALID
        : STRATA_CERT_UNTRUSTED;
    }
  }
  if (result == STRATA_CERT_WRONG_IDENTITY) {
    int written = X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, reason, capacity);
    if (written < 0) reason[0] = 0;
  }
  X509_STORE_CTX_free(context);
  sk_X509_pop_free(chain, X509_free);
  X509_free(leaf);
  ERR_clear_error();
  return result;
}

/// The reason of the last failed verification, or of the oldest queued OpenSSL error, as text;
/// drains the thread's error queue either way.
static inline void strata_tls_error_text(SSL *ssl, char *buffer, size_t capacity) {
  buffer[0] = 0;
  if (ssl != NULL) {
    long result = SSL_get_verify_result(ssl);
    if (result != X509_V_OK) {
      snprintf(buffer, capacity, "certificate verification failed: %s", X509_verify_cert_error_string(result));
      ERR_clear_error();
      return;
    }
  }
  unsigned long code = ERR_get_error();
  if (code != 0) ERR_error_string_n(code, buffer, capacity);
  ERR_clear_error();
}

#endif
