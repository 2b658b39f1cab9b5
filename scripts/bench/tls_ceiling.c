// The TLS ceiling: the loopback ceiling's blob request/response (one copy each side, thread per
// connection, pools rotated so data is not cache-hot) over TLS 1.3 with user-space OpenSSL and
// TLS_AES_128_GCM_SHA256, and nothing else (no checksum, no framing, no storage). What any blob
// server using user-space TLS could reach on this machine with client and server on it; Strata's
// TLS rows in docs/performance.md are read against it (scripts/bench-tls.sh runs it).
//   tls_ceiling server PORT CERT_PEM KEY_PEM POOL_MIB          (127.0.0.1 only)
//   tls_ceiling client PORT CA_PEM SIZE SECONDS STREAMS put|get POOL_MIB
// Request: 16-byte header {u32 op; u32 pad; u64 len}. put: header + len bytes -> 8-byte ack.
// get: header -> len bytes. The client prints one JSON line (aggregate over streams).
// Both ends read ahead 256 KiB (one recv serves many 16 KiB records) and write through a 256 KiB
// buffer BIO flushed once per message (many records per send): the per-record system calls that
// a plain SSL_read/SSL_write loop would add are not part of the ceiling.
// Build: gcc -O2 -pthread -o tls_ceiling tls_ceiling.c -lssl -lcrypto
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  uint32_t op, pad;
  uint64_t len;
} header_t;
enum { OP_PUT = 1, OP_GET = 2 };
static const size_t chunk = 1 << 20;  // SSL_write/SSL_read calls of at most 1 MiB

static size_t pool_bytes;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
  fprintf(stderr, "tls_ceiling: %s\n", what);
  ERR_print_errors_fp(stderr);
  exit(1);
}

static void *map_pool(size_t bytes) {
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) die("mmap");
  memset(p, 0x5a, bytes);
  return p;
}

static int read_full(SSL *ssl, void *buffer, size_t n) {
  char *p = buffer;
  while (n) {
    int r = SSL_read(ssl, p, (int)(n < chunk ? n : chunk));
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static int write_full(SSL *ssl, const void *buffer, size_t n) {
  const char *p = buffer;
  while (n) {
    int w = SSL_write(ssl, p, (int)(n < chunk ? n : chunk));
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static const int buffer_bytes = 256 << 10;

static SSL_CTX *context(int server) {
  SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!ctx) die("SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, buffer_bytes);
  if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256") != 1) die("ciphersuites");
  return ctx;
}

// A session on `fd` that reads from the socket and writes through a buffer BIO.
static SSL *session(SSL_CTX *ctx, int fd) {
  SSL *ssl = SSL_new(ctx);
  BIO *socket_bio = BIO_new_socket(fd, BIO_NOCLOSE);
  BIO *buffer = BIO_new(BIO_f_buffer());
  if (!ssl || !socket_bio || !buffer || BIO_set_write_buffer_size(buffer, buffer_bytes) != 1) die("session");
  BIO_up_ref(socket_bio);  // held as the read BIO and inside the write chain
  SSL_set_bio(ssl, socket_bio, BIO_push(buffer, socket_bio));
  return ssl;
}

static int flush(SSL *ssl) { return BIO_flush(SSL_get_wbio(ssl)) == 1 ? 0 : -1; }

static int tcp_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// ---------------- server ----------------
typedef struct {
  SSL_CTX *ctx;
  int fd;
} connection_t;

static void *serve(void *arg) {
  connection_t *c = arg;
  SSL *ssl = session(c->ctx, c->fd);
  char *pool = map_pool(pool_bytes);  // before the handshake, so the client's clock never waits on it
  size_t offset = 0;
  if (SSL_accept(ssl) != 1 || flush(ssl)) goto done;
  header_t h;
  while (read_full(ssl, &h, sizeof h) == 0) {
    if (h.len > pool_bytes) break;
    if (offset + h.len > pool_bytes) offset = 0;
    if (h.op == OP_PUT) {
      uint64_t ack = h.len;
      if (read_full(ssl, pool + offset, h.len) || write_full(ssl, &ack, sizeof ack) || flush(ssl)) break;
    } else if (h.op == OP_GET) {
      if (write_full(ssl, pool + offset, h.len) || flush(ssl)) break;
    } else {
      break;
    }
    offset += h.len;
  }
done:
  SSL_free(ssl);
  close(c->fd);
  munmap(pool, pool_bytes);
  free(c);
  return NULL;
}

static _Noreturn void server(int port, const char *cert, const char *key) {
  SSL_CTX *ctx = context(1);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) die("certificate");
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) die("key");
  int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (bind(listener, (struct sockaddr *)&a, sizeof a) || listen(listener, 64)) die("bind/listen");
  for (;;) {
    int fd = accept(listener, NULL, NULL);
    if (fd < 0) continue;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    connection_t *c = malloc(sizeof *c);
    c->ctx = ctx;
    c->fd = fd;
    pthread_t t;
    pthread_create(&t, NULL, serve, c);
    pthread_detach(t);
  }
}

// ---------------- client ----------------
typedef struct {
  SSL_CTX *ctx;
  int port, op;
  size_t size;
  double seconds, elapsed;
  uint64_t bytes, requests;
  int failed;
} stream_t;

static void *run_stream(void *arg) {
  stream_t *s = arg;
  int fd = tcp_connect(s->port);
  SSL *ssl = session(s->ctx, fd);
  if (SSL_connect(ssl) != 1 || flush(ssl)) {
    s->failed = 1;
    return NULL;
  }
  char *pool = map_pool(pool_bytes);
  size_t offset = 0;
  // Each stream is timed from its first request: connection set-up is not part of the rate.
  double start = now(), end = start + s->seconds;
  while (now() < end) {
    if (offset + s->size > pool_bytes) offset = 0;
    header_t h = {.op = (uint32_t)s->op, .len = s->size};
    uint64_t ack;
    int bad = write_full(ssl, &h, sizeof h);
    if (!bad && s->op == OP_PUT) bad = write_full(ssl, pool + offset, s->size);
    if (!bad) bad = flush(ssl);
    if (!bad && s->op == OP_PUT) bad = read_full(ssl, &ack, sizeof ack);
    if (!bad && s->op == OP_GET) bad = read_full(ssl, pool + offset, s->size);
    if (bad) {
      s->failed = 1;
      break;
    }
    s->bytes += s->size;
    s->requests += 1;
    offset += s->size;
  }
  s->elapsed = now() - start;
  SSL_shutdown(ssl);
  SSL_free(ssl);
  close(fd);
  munmap(pool, pool_bytes);
  return NULL;
}

static int client(int port, const char *ca, size_t size, double seconds, int streams, int op) {
  SSL_CTX *ctx = context(0);
  if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) die("CA file");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  stream_t s[64] = {0};
  pthread_t t[64];
  if (streams < 1 || streams > 64) die("streams must be 1..64");
  for (int i = 0; i < streams; i++) {
    s[i] = (stream_t){.ctx = ctx, .port = port, .op = op, .size = size, .seconds = seconds};
    pthread_create(&t[i], NULL, run_stream, &s[i]);
  }
  double bytes_per_s = 0, requests_per_s = 0;
  int failed = 0;
  for (int i = 0; i < streams; i++) {
    pthread_join(t[i], NULL);
    if (s[i].elapsed > 0) {
      bytes_per_s += s[i].bytes / s[i].elapsed;
      requests_per_s += s[i].requests / s[i].elapsed;
    }
    failed |= s[i].failed;
  }
  printf("{\"op\":\"%s\",\"size\":%zu,\"streams\":%d,\"gbps\":%.3f,\"ops_per_s\":%.1f,\"failed\":%s}\n",
         op == OP_GET ? "get" : "put", size, streams, bytes_per_s / 1e9, requests_per_s, failed ? "true" : "false");
  return failed;
}

int main(int argc, char **argv) {
  if (argc == 6 && !strcmp(argv[1], "server")) {
    pool_bytes = (size_t)atoi(argv[5]) << 20;
    server(atoi(argv[2]), argv[3], argv[4]);
  }
  if (argc == 9 && !strcmp(argv[1], "client")) {
    pool_bytes = (size_t)atoi(argv[8]) << 20;
    size_t size = strtoull(argv[4], NULL, 10);
    if (size == 0 || size > pool_bytes) die("SIZE must be 1..POOL_MIB MiB");
    return client(atoi(argv[2]), argv[3], size, atof(argv[5]), atoi(argv[6]), !strcmp(argv[7], "put") ? OP_PUT : OP_GET);
  }
  fprintf(stderr,
          "usage: tls_ceiling server PORT CERT_PEM KEY_PEM POOL_MIB\n"
          "       tls_ceiling client PORT CA_PEM SIZE SECONDS STREAMS put|get POOL_MIB\n");
  return 64;
}
