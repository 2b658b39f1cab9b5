// CRC-32C: SSE4.2 `crc32` instruction on three interleaved streams where the CPU has it
// (one stream is bound by the instruction's 3-cycle latency), a table loop elsewhere.
// The three partial CRCs are merged by multiplying by x^(8n) mod P with precomputed tables.
#include "CCRC32C.h"

#include <stdint.h>
#include <string.h>

#define POLY 0x82f63b78u /* Castagnoli, bit-reflected */

static uint32_t byte_table[256];

/* a * b mod P, both bit-reflected polynomials (bit 31 is x^0). */
static uint32_t multiply_mod_p(uint32_t a, uint32_t b) {
  uint32_t m = 1u << 31, product = 0;
  for (;;) {
    if (a & m) {
      product ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = (b & 1) ? (b >> 1) ^ POLY : b >> 1;
  }
  return product;
}

/* x^(8 * bytes) mod P. */
static uint32_t x_pow_8n_mod_p(size_t bytes) {
  uint32_t result = 1u << 31; /* x^0 */
  uint32_t square = 1u << 30; /* x^1, squared up to x^(2^k) as k grows */
  uint64_t bits = (uint64_t)bytes * 8;
  while (bits) {
    if (bits & 1) result = multiply_mod_p(square, result);
    square = multiply_mod_p(square, square);
    bits >>= 1;
  }
  return result;
}

static void portable_init(void) {
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = n;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
    byte_table[n] = c;
  }
}

static uint32_t portable_raw(uint32_t crc, const unsigned char *p, size_t length) {
  while (length--) crc = byte_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>

/* Bytes per stream in the interleaved loop: long enough to hide the merge, short enough for L1. */
#define LANE_BYTES 4096
static uint32_t shift_table[4][256]; /* crc -> crc * x^(8*LANE_BYTES) mod P, a byte at a time */
static int hardware_available;

static void hardware_init(void) {
  unsigned int eax, ebx, ecx, edx;
  hardware_available = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_SSE4_2);
  uint32_t op = x_pow_8n_mod_p(LANE_BYTES);
  for (int k = 0; k < 4; k++)
    for (uint32_t b = 0; b < 256; b++) shift_table[k][b] = multiply_mod_p(op, b << (8 * k));
}

static inline uint32_t shift_lane(uint32_t crc) {
  return shift_table[0][crc & 0xff] ^ shift_table[1][(crc >> 8) & 0xff] ^
         shift_table[2][(crc >> 16) & 0xff] ^ shift_table[3][crc >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t hardware_raw(uint32_t crc, const unsigned char *p,
                                                               size_t length) {
  uint64_t c0 = crc;
  while (length && ((uintptr_t)p & 7)) {
    c0 = _mm_crc32_u8((uint32_t)c0, *p++);
    length--;
  }
  while (length >= 3 * LANE_BYTES) {
    uint64_t c1 = 0, c2 = 0;
    const unsigned char *end = p + LANE_BYTES;
    do {
      uint64_t w0, w1, w2;
      memcpy(&w0, p, 8);
      memcpy(&w1, p + LANE_BYTES, 8);
      memcpy(&w2, p + 2 * LANE_BYTES, 8);
      c0 = _mm_crc32_u64(c0, w0);
      c1 = _mm_crc32_u64(c1, w1);
      c2 = _mm_crc32_u64(c2, w2);
      p += 8;
    } while (p < end);
    c0 = shift_lane((uint32_t)c0) ^ (uint32_t)c1;
    c0 = shift_lane((uint32_t)c0) ^ (uint32_t)c2;
    p += 2 * LANE_BYTES;
    length -= 3 * LANE_BYTES;
  }
  while (length >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c0 = _mm_crc32_u64(c0, w);
    p += 8;
    length -= 8;
  }
  while (length--) c0 = _mm_crc32_u8((uint32_t)c0, *p++);
  return (uint32_t)c0;
}
#endif

__attribute__((constructor)) static void crc32c_init(void) {
  portable_init();
#if defined(__x86_64__)
  hardware_init();
#endif
}

uint32_t strata_crc32c(uint32_t crc, const void *data, size_t length) {
#if defined(__x86_64__)
  if (hardware_available) return ~hardware_raw(~crc, (const unsigned char *)data, length);
#endif
  return ~portable_raw(~crc, (const unsigned char *)data, length);
}

uint32_t strata_crc32c_portable(uint32_t crc, const void *data, size_t length) {
  return ~portable_raw(~crc, (const unsigned char *)data, length);
}

int strata_crc32c_hardware(void) {
#if defined(__x86_64__)
  return hardware_available;
#else
  return 0;
#endif
}

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

/* Copies with non-temporal stores: a regular store reads each destination line before it fills
   it, a streaming store does not, so a copy too large to stay in cache moves two bytes over the
   memory bus per byte copied instead of three (and does not evict the cache). */
static void stream_copy(unsigned char *out, const unsigned char *in, size_t length) {
#if defined(__x86_64__)
  size_t head = (16 - ((uintptr_t)out & 15)) & 15;
  if (head > length) head = length;
  memcpy(out, in, head);
  out += head;
  in += head;
  length -= head;
  while (length >= 64) {
    __m128i a = _mm_loadu_si128((const __m128i *)in);
    __m128i b = _mm_loadu_si128((const __m128i *)(in + 16));
    __m128i c = _mm_loadu_si128((const __m128i *)(in + 32));
    __m128i d = _mm_loadu_si128((const __m128i *)(in + 48));
    _mm_stream_si128((__m128i *)out, a);
    _mm_stream_si128((__m128i *)(out + 16), b);
    _mm_stream_si128((__m128i *)(out + 32), c);
    _mm_stream_si128((__m128i *)(out + 48), d);
    out += 64;
    in += 64;
    length -= 64;
  }
#endif
  memcpy(out, in, length);
}

uint32_t strata_crc32c_copy(uint32_t crc, void *destination, const void *source, size_t length) {
  // Chunks small enough to stay in L1/L2: the checksum pulls each chunk into cache, the copy then
  // reads it from there, so the source crosses the memory bus once. A block of a mebibyte or more
  // is written with streaming stores (measured in docs/performance.md, "same-host GET").
  enum { CHUNK = 16 << 10, STREAM_FROM = 1 << 20 };
  int streaming = length >= STREAM_FROM;
  unsigned char *out = destination;
  const unsigned char *in = source;
  while (length > 0) {
    size_t step = length < CHUNK ? length : CHUNK;
    crc = strata_crc32c(crc, in, step);
    if (streaming) {
      stream_copy(out, in, step);
    } else {
      memcpy(out, in, step);
    }
    out += step;
    in += step;
    length -= step;
  }
#if defined(__x86_64__)
  if (streaming) _mm_sfence(); /* the streamed lines are visible before the caller answers */
#endif
  return crc;
}
