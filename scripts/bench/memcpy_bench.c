// Single-thread memcpy ceiling for the same-host path's target (issue: same-host >= 0.8x memcpy):
//   memcpy_bench SIZE SECONDS POOL_MIB
// Copies SIZE-byte blocks from a rotating pool of POOL_MIB (so neither side is cache-hot, like
// loopback_ceiling and kv_bench) into a second pool, for SECONDS. Prints one JSON line:
// {"system":"memcpy","size":N,"gbps":G,"p50_us":P,"p99_us":Q} (GB = 1e9 bytes; latency per copy).
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static void *xmap(size_t n) {
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) { perror("mmap"); exit(1); }
  memset(p, 0x5a, n);
  return p;
}
static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: memcpy_bench SIZE SECONDS POOL_MIB\n"); return 2; }
  size_t size = strtoull(argv[1], 0, 10);
  double seconds = atof(argv[2]);
  size_t pool = (size_t)atoi(argv[3]) << 20;
  if (pool < size) pool = size;
  size_t slots = pool / size;
  char *src = xmap(slots * size), *dst = xmap(slots * size);
  size_t cap = 1 << 22, n = 0;
  double *lat = malloc(cap * sizeof(double));
  double start = now(), end = start + seconds, t = start;
  while (t < end) {
    size_t slot = n % slots;
    double t0 = now();
    memcpy(dst + slot * size, src + ((slot * 7 + 3) % slots) * size, size);
    t = now();
    if (n < cap) lat[n] = (t - t0) * 1e6;
    n++;
  }
  size_t m = n < cap ? n : cap;
  qsort(lat, m, sizeof(double), cmp);
  printf("{\"system\":\"memcpy\",\"size\":%zu,\"gbps\":%.3f,\"p50_us\":%.1f,\"p99_us\":%.1f}\n", size,
         (double)n * size / (t - start) / 1e9, lat[m / 2], lat[(size_t)(m * 0.99)]);
  return 0;
}
