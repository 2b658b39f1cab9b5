// OpenSSL (libssl, libcrypto) for Swift: macros over SSL_CTX_ctrl and friends wrapped as functions.
#ifndef STRATA_COPENSSL_SHIM_H
#define STRATA_COPENSSL_SHIM_H
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

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

#endif
