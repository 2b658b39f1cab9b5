// CRC-32C, four ways, the fastest this CPU has chosen once when the library loads:
// - wide: the folding below on 512-bit registers (AVX-512 VPCLMULQDQ), four 128-bit lanes per
//   register and four registers, 256 bytes per step (AMD Zen 4, Intel Ice Lake and later);
// - folded: carry-less multiplication (PCLMULQDQ) folds four 128-bit lanes of the input forward
//   by 512 bits at a time, then the SSE4.2 `crc32` instruction reduces the last 128 bits. Where
//   `crc32` has a throughput of one per three cycles (AMD Zen 1 and 2) this is ~1.7x faster;
// - interleaved: the `crc32` instruction on three interleaved streams (one stream is bound by the
//   instruction's 3-cycle latency), merged by multiplying by x^(8n) mod P with precomputed tables;
// - portable: a table loop, where the CPU has neither instruction (also the tests' reference).
// All three compute the same function; the choice changes speed only.
#include "CCRC32C.h"

#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <time.h>

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

/* x^bits mod P. */
static uint32_t x_pow_n_mod_p(uint64_t bits) {
  uint32_t result = 1u << 31; /* x^0 */
  uint32_t square = 1u << 30; /* x^1, squared up to x^(2^k) as k grows */
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
static int interleaved_available, folded_available, wide_available;

/* Whether the operating system saves the AVX-512 registers (XCR0: SSE, AVX, opmask, the upper
   halves of ZMM0-15 and ZMM16-31), without which the instructions fault even where cpuid has them. */
static int os_saves_avx512(void) {
  unsigned int lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  (void)hi;
  return (lo & 0xe6) == 0xe6;
}

static void hardware_init(void) {
  unsigned int eax, ebx, ecx, edx;
  int cpuid = __get_cpuid(1, &eax, &ebx, &ecx, &edx);
  interleaved_available = cpuid && (ecx & bit_SSE4_2);
  folded_available = interleaved_available && (ecx & bit_PCLMUL);
  if (folded_available && (ecx & bit_OSXSAVE) && __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
    wide_available = (ebx & bit_AVX512F) && (ecx & bit_VPCLMULQDQ) && os_saves_avx512();
  uint32_t op = x_pow_n_mod_p(8 * (uint64_t)LANE_BYTES);
  for (int k = 0; k < 4; k++)
    for (uint32_t b = 0; b < 256; b++) shift_table[k][b] = multiply_mod_p(op, b << (8 * k));
}

static inline uint32_t shift_lane(uint32_t crc) {
  return shift_table[0][crc & 0xff] ^ shift_table[1][(crc >> 8) & 0xff] ^
         shift_table[2][(crc >> 16) & 0xff] ^ shift_table[3][crc >> 24];
}

/* The `crc32` instruction over `length` bytes, 8 at a time: what is left after the lanes. */
__attribute__((target("sse4.2"))) static inline uint32_t crc_words(uint64_t c0, const unsigned char *p,
                                                                   size_t length) {
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
  return crc_words(c0, p, length);
}
#endif

#if defined(__x86_64__)
#include <emmintrin.h>
#include <wmmintrin.h>

/* Folding (PCLMULQDQ). A 128-bit lane, loaded little-endian, is the polynomial A = Ahi x^64 + Alo
   with Ahi in its low quadword (the input is bit-reflected: its first bit is the highest power).
   Moving A forward by T bits, A x^T = Ahi (x^(T+64) mod P) + Alo (x^T mod P), is two carry-less
   products of a quadword by a 32-bit constant, which land (with the reflection's offset of 33 bits
   folded into the constant) as a 96-bit value within the lane T bits later; XORed into that lane,
   the input keeps its remainder mod P. Four lanes are folded 512 bits at a time, then into one,
   and the `crc32` instruction turns the last 128 bits into the CRC (the CRC of a 16-byte input
   from state 0 is that input times x^32 mod P, which is what is wanted). */
static __m128i fold_by_2048, fold_by_1536, fold_by_1024, fold_by_512, fold_by_384, fold_by_256, fold_by_128;

/* Constants for moving a lane forward by `bits`: x^(bits+31) mod P for its low quadword,
   x^(bits-33) mod P for its high one, bit-reflected. */
static __m128i fold_constants(unsigned bits) {
  return _mm_set_epi64x((long long)x_pow_n_mod_p(bits - 33), (long long)x_pow_n_mod_p(bits + 31));
}

static void folded_init(void) {
  fold_by_2048 = fold_constants(2048);
  fold_by_1536 = fold_constants(1536);
  fold_by_1024 = fold_constants(1024);
  fold_by_512 = fold_constants(512);
  fold_by_384 = fold_constants(384);
  fold_by_256 = fold_constants(256);
  fold_by_128 = fold_constants(128);
}

__attribute__((target("sse4.2,pclmul"))) static inline __m128i fold(__m128i lane, __m128i constants) {
  return _mm_xor_si128(_mm_clmulepi64_si128(lane, constants, 0x00), _mm_clmulepi64_si128(lane, constants, 0x11));
}

/* Four lanes folded into one, reduced to a CRC state by the `crc32` instruction. */
__attribute__((target("sse4.2,pclmul"))) static inline uint64_t reduce(__m128i x0, __m128i x1, __m128i x2,
                                                                       __m128i x3) {
  __m128i x = _mm_xor_si128(_mm_xor_si128(fold(x0, fold_by_384), fold(x1, fold_by_256)),
                            _mm_xor_si128(fold(x2, fold_by_128), x3));
  uint64_t crc = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(x));
  return _mm_crc32_u64(crc, (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(x, x)));
}

#define LOAD16(at) _mm_loadu_si128((const __m128i *)(at))

__attribute__((target("sse4.2,pclmul"))) static uint32_t folded_raw(uint32_t crc, const unsigned char *p,
                                                                    size_t length) {
  uint64_t c0 = crc;
  if (length >= 128) {
    __m128i x0 = _mm_xor_si128(LOAD16(p), _mm_cvtsi32_si128((int)crc));
    __m128i x1 = LOAD16(p + 16), x2 = LOAD16(p + 32), x3 = LOAD16(p + 48);
    p += 64;
    length -= 64;
    while (length >= 64) {
      x0 = _mm_xor_si128(fold(x0, fold_by_512), LOAD16(p));
      x1 = _mm_xor_si128(fold(x1, fold_by_512), LOAD16(p + 16));
      x2 = _mm_xor_si128(fold(x2, fold_by_512), LOAD16(p + 32));
      x3 = _mm_xor_si128(fold(x3, fold_by_512), LOAD16(p + 48));
      p += 64;
      length -= 64;
    }
    c0 = reduce(x0, x1, x2, x3);
  }
  return crc_words(c0, p, length);
}

/* Copies and checksums in one pass: every 16 bytes are loaded once into a register, fed to the
   CRC and stored from the same register: folded as in `folded_raw` (`folded`), else on three
   interleaved lanes as `hardware_raw` (the CRC instruction, not the memory bus, would otherwise
   bound it). The checksum is therefore of exactly the bytes written, whatever the source does
   meanwhile. `streaming`: non-temporal stores, which do not read each destination line before
   filling it, so a copy too large to stay in cache moves two bytes over the memory bus per byte
   copied instead of three (and does not evict the cache). */
__attribute__((target("sse4.2,pclmul"))) static uint32_t hardware_copy_raw(uint32_t crc, unsigned char *out,
                                                                           const unsigned char *in, size_t length,
                                                                           int streaming, int folded) {
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
  if (folded && length >= 128) {
    __m128i a = LOAD16(in), b = LOAD16(in + 16), c = LOAD16(in + 32), d = LOAD16(in + 48);
    __m128i x0 = _mm_xor_si128(a, _mm_cvtsi32_si128((int)c0)), x1 = b, x2 = c, x3 = d;
    for (;;) {
      STORE16(out, a);
      STORE16(out + 16, b);
      STORE16(out + 32, c);
      STORE16(out + 48, d);
      in += 64;
      out += 64;
      length -= 64;
      if (length < 64) break;
      a = LOAD16(in);
      b = LOAD16(in + 16);
      c = LOAD16(in + 32);
      d = LOAD16(in + 48);
      x0 = _mm_xor_si128(fold(x0, fold_by_512), a);
      x1 = _mm_xor_si128(fold(x1, fold_by_512), b);
      x2 = _mm_xor_si128(fold(x2, fold_by_512), c);
      x3 = _mm_xor_si128(fold(x3, fold_by_512), d);
    }
    c0 = reduce(x0, x1, x2, x3);
  }
  while (!folded && length >= 3 * LANE_BYTES) {
    uint64_t c1 = 0, c2 = 0;
    const unsigned char *end = in + LANE_BYTES;
    do {
      __m128i a = LOAD16(in);
      __m128i b = LOAD16(in + LANE_BYTES);
      __m128i c = LOAD16(in + 2 * LANE_BYTES);
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
    __m128i a = LOAD16(in);
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

/* Wide folding (AVX-512 VPCLMULQDQ): `fold` on four 128-bit lanes of a register at once. Four
   registers hold 256 bytes; each step moves every lane 2048 bits forward onto the next 256 bytes.
   At the end the registers are folded into the last one (by 1536, 1024 and 512 bits), whose four
   lanes are the four lanes `reduce` takes. Shorter than 512 bytes, or what is left after the last
   256-byte step, goes to the 128-bit code. */
#define WIDE_TARGET __attribute__((target("avx512f,vpclmulqdq,sse4.2,pclmul")))
#define LOAD64(at) _mm512_loadu_si512((const void *)(at))

WIDE_TARGET static inline __m512i wide_fold(__m512i lanes, __m512i constants, __m512i plus) {
  /* 0x96: the three-way exclusive or */
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(lanes, constants, 0x00),
                                   _mm512_clmulepi64_epi128(lanes, constants, 0x11), plus, 0x96);
}

/* The CRC state of four registers of folded lanes (the 256 bytes last loaded). */
WIDE_TARGET static inline uint64_t wide_reduce(__m512i x0, __m512i x1, __m512i x2, __m512i x3) {
  __m512i x = wide_fold(x0, _mm512_broadcast_i32x4(fold_by_1536), x3);
  x = wide_fold(x1, _mm512_broadcast_i32x4(fold_by_1024), x);
  x = wide_fold(x2, _mm512_broadcast_i32x4(fold_by_512), x);
  return reduce(_mm512_extracti32x4_epi32(x, 0), _mm512_extracti32x4_epi32(x, 1), _mm512_extracti32x4_epi32(x, 2),
                _mm512_extracti32x4_epi32(x, 3));
}

/* The first 64 bytes with the CRC state so far added into their lowest 32 bits. */
WIDE_TARGET static inline __m512i wide_first(const unsigned char *p, uint32_t crc) {
  return _mm512_xor_si512(LOAD64(p), _mm512_inserti32x4(_mm512_setzero_si512(), _mm_cvtsi32_si128((int)crc), 0));
}

WIDE_TARGET static uint32_t wide_raw(uint32_t crc, const unsigned char *p, size_t length) {
  if (length < 512) return folded_raw(crc, p, length);
  __m512i by_2048 = _mm512_broadcast_i32x4(fold_by_2048);
  __m512i x0 = wide_first(p, crc), x1 = LOAD64(p + 64), x2 = LOAD64(p + 128), x3 = LOAD64(p + 192);
  p += 256;
  length -= 256;
  while (length >= 256) {
    x0 = wide_fold(x0, by_2048, LOAD64(p));
    x1 = wide_fold(x1, by_2048, LOAD64(p + 64));
    x2 = wide_fold(x2, by_2048, LOAD64(p + 128));
    x3 = wide_fold(x3, by_2048, LOAD64(p + 192));
    p += 256;
    length -= 256;
  }
  return folded_raw((uint32_t)wide_reduce(x0, x1, x2, x3), p, length);
}

/* `hardware_copy_raw` with wide folding and 64-byte stores (the destination aligned to 64 first). */
WIDE_TARGET static uint32_t wide_copy_raw(uint32_t crc, unsigned char *out, const unsigned char *in, size_t length,
                                          int streaming) {
  uint64_t c0 = crc;
  while (length && ((uintptr_t)out & 63)) {
    c0 = _mm_crc32_u8((uint32_t)c0, *in);
    *out++ = *in++;
    length--;
  }
  if (length >= 512) {
#define STORE64(at, value) \
  (streaming ? _mm512_stream_si512((void *)(at), (value)) : _mm512_store_si512((void *)(at), (value)))
    __m512i by_2048 = _mm512_broadcast_i32x4(fold_by_2048);
    __m512i a = LOAD64(in), b = LOAD64(in + 64), c = LOAD64(in + 128), d = LOAD64(in + 192);
    __m512i x0 = wide_first(in, (uint32_t)c0), x1 = b, x2 = c, x3 = d;
    for (;;) {
      STORE64(out, a);
      STORE64(out + 64, b);
      STORE64(out + 128, c);
      STORE64(out + 192, d);
      in += 256;
      out += 256;
      length -= 256;
      if (length < 256) break;
      a = LOAD64(in);
      b = LOAD64(in + 64);
      c = LOAD64(in + 128);
      d = LOAD64(in + 192);
      x0 = wide_fold(x0, by_2048, a);
      x1 = wide_fold(x1, by_2048, b);
      x2 = wide_fold(x2, by_2048, c);
      x3 = wide_fold(x3, by_2048, d);
    }
#undef STORE64
    c0 = wide_reduce(x0, x1, x2, x3);
  }
  /* the rest (also the fence after streaming stores) */
  return hardware_copy_raw((uint32_t)c0, out, in, length, streaming, 1);
}
#undef LOAD64
#undef LOAD16
#endif

static int available_methods = 1 << STRATA_CRC32C_PORTABLE;
static int chosen_method = STRATA_CRC32C_PORTABLE;

/* A block of 256 KiB or more is copied with streaming stores (measured in docs/performance.md,
   "Same-host path"); a smaller one is left in cache for its reader. */
enum { STREAM_FROM = 256 << 10 };

uint32_t strata_crc32c_using(int method, uint32_t crc, const void *data, size_t length) {
  const unsigned char *p = data;
#if defined(__x86_64__)
  if (method == STRATA_CRC32C_WIDE && wide_available) return ~wide_raw(~crc, p, length);
  if (method == STRATA_CRC32C_FOLDED && folded_available) return ~folded_raw(~crc, p, length);
  if (method == STRATA_CRC32C_INTERLEAVED && interleaved_available) return ~hardware_raw(~crc, p, length);
#endif
  (void)method;
  return ~portable_raw(~crc, p, length);
}

uint32_t strata_crc32c_copy_using(int method, uint32_t crc, void *destination, const void *source, size_t length) {
  unsigned char *out = destination;
  const unsigned char *in = source;
#if defined(__x86_64__)
  int streaming = length >= STREAM_FROM;
  if (method == STRATA_CRC32C_WIDE && wide_available) return ~wide_copy_raw(~crc, out, in, length, streaming);
  if (method == STRATA_CRC32C_FOLDED && folded_available) return ~hardware_copy_raw(~crc, out, in, length, streaming, 1);
  if (method == STRATA_CRC32C_INTERLEAVED && interleaved_available)
    return ~hardware_copy_raw(~crc, out, in, length, streaming, 0);
#endif
  // Elsewhere: a chunk at a time, checksummed in the destination while it is in cache (so again
  // the checksum is of the bytes written).
  for (size_t done = 0; done < length;) {
    size_t step = length - done < (16 << 10) ? length - done : (16 << 10);
    memcpy(out + done, in + done, step);
    crc = strata_crc32c_using(method, crc, out + done, step);
    done += step;
  }
  return crc;
}

/* Nanoseconds of the fastest of three runs (after one to warm up) of four checksums of `sample`. */
static uint64_t time_method(int method, const unsigned char *sample, size_t length) {
  uint64_t best = UINT64_MAX;
  volatile uint32_t sink = 0;
  for (int run = 0; run < 4; run++) {
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int pass = 0; pass < 4; pass++) sink ^= strata_crc32c_using(method, sink, sample, length);
    clock_gettime(CLOCK_MONOTONIC, &end);
    uint64_t elapsed = (uint64_t)(end.tv_sec - start.tv_sec) * 1000000000u + (uint64_t)end.tv_nsec -
                       (uint64_t)start.tv_nsec;
    if (run > 0 && elapsed < best) best = elapsed; /* the first run warms the code and the sample */
  }
  return best;
}

__attribute__((constructor)) static void crc32c_init(void) {
  portable_init();
#if defined(__x86_64__)
  hardware_init();
  folded_init();
  if (interleaved_available) available_methods |= 1 << STRATA_CRC32C_INTERLEAVED;
  if (folded_available) available_methods |= 1 << STRATA_CRC32C_FOLDED;
  if (wide_available) available_methods |= 1 << STRATA_CRC32C_WIDE;
  /* Which is fastest depends on the CPU (the `crc32` instruction's throughput against PCLMULQDQ's,
     and whether 512-bit registers run at full width), so it is measured: 16 checksums of 48 KiB
     by each method, ~0.2 ms. The sample is four of the interleaved method's three-lane steps
     (a sample shorter than one step would time it on one lane, a third of its speed). */
  static unsigned char sample[4 * 3 * LANE_BYTES];
  for (size_t i = 0; i < sizeof sample; i++) sample[i] = (unsigned char)(i * 2654435761u >> 13);
  uint64_t best = UINT64_MAX;
  for (int method = STRATA_CRC32C_INTERLEAVED; method <= STRATA_CRC32C_WIDE; method++) {
    if (!(available_methods & (1 << method))) continue;
    uint64_t elapsed = time_method(method, sample, sizeof sample);
    if (elapsed < best) {
      best = elapsed;
      chosen_method = method;
    }
  }
#endif
}

uint32_t strata_crc32c(uint32_t crc, const void *data, size_t length) {
  return strata_crc32c_using(chosen_method, crc, data, length);
}

uint32_t strata_crc32c_copy(uint32_t crc, void *destination, const void *source, size_t length) {
  return strata_crc32c_copy_using(chosen_method, crc, destination, source, length);
}

uint32_t strata_crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t length_b) {
  /* Appending B multiplies A's register by x^(8 length_b); the pre- and post-inversions cancel
     (as in zlib's crc32_combine). About a microsecond. */
  return multiply_mod_p(x_pow_n_mod_p((uint64_t)length_b * 8), crc_a) ^ crc_b;
}

int strata_crc32c_method(void) { return chosen_method; }

int strata_crc32c_available_methods(void) { return available_methods; }
