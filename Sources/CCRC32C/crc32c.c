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

/* Copies and checksums in one pass: every 16 bytes are loaded once into a register, fed to the
   CRC and stored from the same register, on three interleaved lanes as `hardware_raw` (the CRC
   instruction, not the memory bus, would otherwise bound it). The checksum is therefore of exactly
   the bytes written, whatever the source does meanwhile. `streaming`: non-temporal stores, which
   do not read each destination line before filling it, so a copy too large to stay in cache moves
   two bytes over the memory bus per byte copied instead of three (and does not evict the cache). */
__attribute__((target("sse4.2"))) static uint32_t hardware_copy_raw(uint32_t crc, unsigned char *out,
                                                                    const unsigned char *in, size_t length,
                                                                    int streaming) {
  uint64_t c0 = crc;
  while (length && ((uintptr_t)out & 15)) {
    c0 = _mm_crc32_u8((uint32_t)c0, *in);
    *out++ = *in++;
    length--;
  }
#define STORE16(at, value) \
  (streaming ? _mm_stream_si128((__m128i *)(at), (value)) : _mm_store_si128((__m128i *)(at), (value)))
#define CRC16(c, value) \
  ((c) = _mm_crc32_u64(_mm_crc32_u64((c), (uint64_t)_mm_cvtsi128_si64(value)), \
                       (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64((value), (value)))))
  while (length >= 3 * LANE_BYTES) {
    uint64_t c1 = 0, c2 = 0;
    const unsigned char *end = in + LANE_BYTES;
    do {
      __m128i a = _mm_loadu_si128((const __m128i *)in);
      __m128i b = _mm_loadu_si128((const __m128i *)(in + LANE_BYTES));
      __m128i c = _mm_loadu_si128((const __m128i *)(in + 2 * LANE_BYTES));
      CRC16(c0, a);
      CRC16(c1, b);
      CRC16(c2, c);
      STORE16(out, a);
      STORE16(out + LANE_BYTES, b);
      STORE16(out + 2 * LANE_BYTES, c);
      in += 16;
      out += 16;
    } while (in < end);
    c0 = shift_lane((uint32_t)c0) ^ (uint32_t)c1;
    c0 = shift_lane((uint32_t)c0) ^ (uint32_t)c2;
    in += 2 * LANE_BYTES;
    out += 2 * LANE_BYTES;
    length -= 3 * LANE_BYTES;
  }
  while (length >= 16) {
    __m128i a = _mm_loadu_si128((const __m128i *)in);
    CRC16(c0, a);
    STORE16(out, a);
    in += 16;
    out += 16;
    length -= 16;
  }
#undef STORE16
#undef CRC16
  if (streaming) _mm_sfence(); /* the streamed lines are visible before the caller answers */
  while (length--) {
    c0 = _mm_crc32_u8((uint32_t)c0, *in);
    *out++ = *in++;
  }
  return (uint32_t)c0;
}
#endif

uint32_t strata_crc32c_copy(uint32_t crc, void *destination, const void *source, size_t length) {
  unsigned char *out = destination;
  const unsigned char *in = source;
#if defined(__x86_64__)
  // A block of 256 KiB or more is written with streaming stores (measured in docs/performance.md,
  // "Same-host path"); a smaller one is left in cache for its reader.
  enum { STREAM_FROM = 256 << 10 };
  if (hardware_available) return ~hardware_copy_raw(~crc, out, in, length, length >= STREAM_FROM);
#endif
  // Elsewhere: a chunk at a time, checksummed in the destination while it is in cache (so again
  // the checksum is of the bytes written).
  for (size_t done = 0; done < length;) {
    size_t step = length - done < (16 << 10) ? length - done : (16 << 10);
    memcpy(out + done, in + done, step);
    crc = strata_crc32c(crc, out + done, step);
    done += step;
  }
  return crc;
}
