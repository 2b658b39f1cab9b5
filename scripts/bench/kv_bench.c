// Lean Redis / memcached blob benchmark client, written to be comparable with
// ../shared/bench/loopback_ceiling.c and `strata bench`:
//   kv_bench redis|memcached PORT SIZE SECONDS CONNS get|set BATCH POOL_MIB
// - one thread per connection, TCP_NODELAY, 127.0.0.1 only;
// - a request is BATCH pipelined commands (send all BATCH commands, then read BATCH replies);
//   latency percentiles are per request (per batch), like `strata bench`;
// - SET sends the command header, the value and the trailing CRLF with writev (never joined);
// - GET parses the reply header (RESP bulk `$N\r\n` / memcached `VALUE k f N\r\n`) from a small
//   staging buffer (header reads are capped at 256 bytes, so at most that many value bytes are
//   copied), then recv()s the rest of the value straight into preallocated, pre-faulted memory;
// - values rotate over POOL_MIB of slots per connection (like the ceiling program) so they are
//   not cache-hot; keys rotate over a working set of up to 4 batches per connection (capped at
//   1 GiB in all), written once before the clock starts (for GET) and overwritten by SET.
// Prints one JSON line (aggregate GB/s = value bytes / wall / 1e9, ops/s = values/s).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { REDIS = 1, MEMCACHED = 2 };
enum { OP_SET = 1, OP_GET = 2 };
#define RB 4096      /* staging buffer for reply headers / small replies */
#define HDR_CHUNK 256 /* largest recv into the staging buffer */
#define MAXB 64

static int g_proto, g_port, g_op, g_batch;
static size_t g_size, g_pool_bytes, g_ws;
static double g_secs;
static pthread_barrier_t g_bar;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static void die(const char *what) {
  fprintf(stderr, "kv_bench: %s\n", what);
  exit(1);
}
static void *xmap(size_t n) {
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) { perror("mmap"); exit(1); }
  memset(p, 0x33, n);
  return p;
}
static int dial(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(g_port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, (void *)&a, sizeof a)) { perror("connect"); exit(1); }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}
/* writev everything in iov[0..n), advancing over partial writes */
static int writev_full(int fd, struct iovec *iov, int n) {
  while (n > 0) {
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = n > 1024 ? 1024 : n};
    ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    while (n > 0 && (size_t)w >= iov->iov_len) { w -= iov->iov_len; iov++; n--; }
    if (n > 0) { iov->iov_base = (char *)iov->iov_base + w; iov->iov_len -= w; }
  }
  return 0;
}

/* ---- buffered reader: small staging buffer for headers, direct recv for values ---- */
typedef struct { int fd; size_t pos, len; char buf[RB]; } rd_t;
static int rd_fill(rd_t *r) {
  if (r->pos == r->len) r->pos = r->len = 0;
  else if (r->len + HDR_CHUNK > RB) {
    memmove(r->buf, r->buf + r->pos, r->len - r->pos);
    r->len -= r->pos; r->pos = 0;
  }
  size_t room = RB - r->len;
  if (room > HDR_CHUNK) room = HDR_CHUNK;
  if (room == 0) return -1;
  ssize_t n = recv(r->fd, r->buf + r->len, room, 0);
  if (n <= 0) return -1;
  r->len += n;
  return 0;
}
/* the next CRLF-terminated line, NUL-terminated in place (CR replaced); NULL on error */
static char *rd_line(rd_t *r) {
  for (;;) {
    char *s = r->buf + r->pos;
    char *e = memmem(s, r->len - r->pos, "\r\n", 2);
    if (e) { *e = 0; r->pos = (e - r->buf) + 2; return s; }
    if (rd_fill(r)) return NULL;
  }
}
/* n bytes into dst: whatever is staged, then recv straight into dst */
static int rd_exact(rd_t *r, char *dst, size_t n) {
  size_t have = r->len - r->pos;
  if (have > n) have = n;
  memcpy(dst, r->buf + r->pos, have);
  r->pos += have; n -= have; dst += have;
  while (n) {
    ssize_t got = recv(r->fd, dst, n, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return -1;
    dst += got; n -= got;
  }
  return 0;
}

/* ---- one request: BATCH pipelined commands, then BATCH replies ---- */
typedef struct {
  int id, fd;
  rd_t rd;
  char *pool;
  size_t nslots, slot_i;
  uint64_t values, key_i;
  double wall, cpu;
  double *lat;
  size_t nlat, cap;
  char hdr[MAXB][128];
} conn_t;

static int key_of(conn_t *c, uint64_t k, char *out) {
  return sprintf(out, "b%zu:c%d:k%llu", g_size, c->id, (unsigned long long)(k % g_ws));
}
static int do_set(conn_t *c, int batch) {
  struct iovec iov[3 * MAXB];
  static const char crlf[2] = {'\r', '\n'};
  for (int b = 0; b < batch; b++) {
    char key[64];
    int kl = key_of(c, c->key_i++, key), hl;
    if (g_proto == REDIS)
      hl = sprintf(c->hdr[b], "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%zu\r\n", kl, key, g_size);
    else
      hl = sprintf(c->hdr[b], "set %s 0 0 %zu\r\n", key, g_size);
    iov[3 * b] = (struct iovec){c->hdr[b], hl};
    iov[3 * b + 1] = (struct iovec){c->pool + (c->slot_i++ % c->nslots) * g_size, g_size};
    iov[3 * b + 2] = (struct iovec){(void *)crlf, 2};
  }
  if (writev_full(c->fd, iov, 3 * batch)) return -1;
  for (int b = 0; b < batch; b++) {
    char *l = rd_line(&c->rd);
    if (!l) return -1;
    if (g_proto == REDIS ? strcmp(l, "+OK") : strcmp(l, "STORED")) {
      fprintf(stderr, "kv_bench: SET reply '%s'\n", l);
      return -1;
    }
  }
  return 0;
}
static int do_get(conn_t *c, int batch) {
  char cmd[MAXB * 96];
  size_t n = 0;
  for (int b = 0; b < batch; b++) {
    char key[64];
    int kl = key_of(c, c->key_i++, key);
    if (g_proto == REDIS) n += sprintf(cmd + n, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", kl, key);
    else n += sprintf(cmd + n, "get %s\r\n", key);
  }
  struct iovec iov = {cmd, n};
  if (writev_full(c->fd, &iov, 1)) return -1;
  for (int b = 0; b < batch; b++) {
    char *l = rd_line(&c->rd);
    if (!l) return -1;
    size_t len;
    if (g_proto == REDIS) {
      if (l[0] != '$' || (len = strtoull(l + 1, 0, 10)) != g_size) { fprintf(stderr, "kv_bench: GET reply '%s'\n", l); return -1; }
    } else {
      char *sp = strrchr(l, ' ');
      if (strncmp(l, "VALUE ", 6) || !sp || (len = strtoull(sp + 1, 0, 10)) != g_size) {
        fprintf(stderr, "kv_bench: GET reply '%s'\n", l);
        return -1;
      }
    }
    if (rd_exact(&c->rd, c->pool + (c->slot_i++ % c->nslots) * g_size, len)) return -1;
    l = rd_line(&c->rd); /* the CRLF after the value */
    if (!l || *l) { fprintf(stderr, "kv_bench: no CRLF after value\n"); return -1; }
    if (g_proto == MEMCACHED) {
      l = rd_line(&c->rd);
      if (!l || strcmp(l, "END")) { fprintf(stderr, "kv_bench: expected END\n"); return -1; }
    }
  }
  return 0;
}

static void *conn_thread(void *arg) {
  conn_t *c = arg;
  c->fd = dial();
  c->rd.fd = c->fd;
  c->nslots = g_pool_bytes / g_size;
  if (c->nslots < 1) c->nslots = 1;
  c->pool = xmap(c->nslots * g_size);
  /* write the working set (GET reads it; SET overwrites it), outside the clock */
  for (size_t k = 0; k < g_ws; k += g_batch) {
    int b = g_ws - k < (size_t)g_batch ? (int)(g_ws - k) : g_batch;
    if (do_set(c, b)) die("preload SET failed");
  }
  c->key_i = 0;
  /* warm-up: one request, as the ceiling does */
  if ((g_op == OP_SET ? do_set : do_get)(c, g_batch)) die("warm-up failed");
  pthread_barrier_wait(&g_bar);
  struct timespec c0, c1;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
  double t0 = now(), t = t0;
  do {
    double s = now();
    if ((g_op == OP_SET ? do_set : do_get)(c, g_batch)) die("request failed");
    t = now();
    if (c->nlat < c->cap) c->lat[c->nlat++] = t - s;
    c->values += g_batch;
  } while (t - t0 < g_secs);
  c->wall = t - t0;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
  c->cpu = (c1.tv_sec - c0.tv_sec) + (c1.tv_nsec - c0.tv_nsec) * 1e-9;
  close(c->fd);
  munmap(c->pool, c->nslots * g_size);
  return NULL;
}
static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static void flush_server(void) {
  int fd = dial();
  rd_t *r = calloc(1, sizeof *r);
  r->fd = fd;
  const char *cmd = g_proto == REDIS ? "*1\r\n$8\r\nFLUSHALL\r\n" : "flush_all\r\n";
  struct iovec iov = {(void *)cmd, strlen(cmd)};
  if (writev_full(fd, &iov, 1)) die("flush failed");
  char *l = rd_line(r);
  if (!l || (strcmp(l, "+OK") && strcmp(l, "OK"))) die("flush failed");
  close(fd);
  free(r);
}

int main(int argc, char **argv) {
  if (argc < 9) {
    fprintf(stderr, "usage: %s redis|memcached PORT SIZE SECONDS CONNS get|set BATCH POOL_MIB\n", argv[0]);
    return 2;
  }
  g_proto = !strcmp(argv[1], "redis") ? REDIS : !strcmp(argv[1], "memcached") ? MEMCACHED : 0;
  if (!g_proto) die("protocol: redis or memcached");
  g_port = atoi(argv[2]);
  g_size = strtoull(argv[3], 0, 10);
  g_secs = atof(argv[4]);
  int conns = atoi(argv[5]);
  g_op = !strcmp(argv[6], "set") || !strcmp(argv[6], "put") ? OP_SET : OP_GET;
  g_batch = atoi(argv[7]);
  g_pool_bytes = (size_t)atol(argv[8]) << 20;
  if (conns < 1 || conns > 16 || g_batch < 1 || g_batch > MAXB || g_size == 0) die("bad arguments");
  /* working set per connection: 4 batches, capped at 1 GiB over all connections (at least 1 batch) */
  g_ws = 4 * (size_t)g_batch;
  size_t cap = ((size_t)1 << 30) / (g_size * conns);
  if (g_ws > cap) g_ws = cap;
  if (g_ws < (size_t)g_batch) g_ws = g_batch;
  flush_server();
  conn_t *c = calloc(conns, sizeof *c);
  pthread_t th[16];
  pthread_barrier_init(&g_bar, NULL, conns);
  for (int k = 0; k < conns; k++) {
    c[k].id = k;
    c[k].cap = 1 << 20;
    c[k].lat = malloc(sizeof(double) * c[k].cap);
    pthread_create(&th[k], NULL, conn_thread, &c[k]);
  }
  double values = 0, wall = 0, cpu = 0;
  size_t nl = 0;
  for (int k = 0; k < conns; k++) {
    pthread_join(th[k], NULL);
    values += c[k].values;
    if (c[k].wall > wall) wall = c[k].wall;
    nl += c[k].nlat;
    cpu += c[k].cpu;
  }
  double *all = malloc(sizeof(double) * (nl + 1));
  size_t m = 0;
  for (int k = 0; k < conns; k++) { memcpy(all + m, c[k].lat, c[k].nlat * sizeof(double)); m += c[k].nlat; }
  qsort(all, m, sizeof(double), cmpd);
  printf("{\"system\": \"%s (C client) x%d conn\", \"op\": \"%s\", \"size_bytes\": %zu, \"batch\": %d, "
         "\"gbps\": %.4f, \"ops_s\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"n_lat\": %zu, \"n_items\": %.0f, "
         "\"wall_s\": %.3f, \"cli_cpu_pct\": %.1f, \"keys_per_conn\": %zu, "
         "\"cmd\": \"kv_bench %s PORT %zu %g %d %s %d %s\", "
         "\"note\": \"pipelined batch, writev header+value, recv into preallocated pool %s MiB/conn, TCP_NODELAY\"}\n",
         argv[1], conns, g_op == OP_SET ? "set" : "get", g_size, g_batch, values * g_size / wall / 1e9,
         values / wall, m ? all[m / 2] * 1e6 : 0, m ? all[(size_t)(m * 0.99)] * 1e6 : 0, m, values, wall,
         cpu / wall * 100, g_ws, argv[1], g_size, g_secs, conns, argv[6], g_batch, argv[8], argv[8]);
  return 0;
}
