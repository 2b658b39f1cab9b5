// CRC-32C (Castagnoli), the block checksum of the data path.
#ifndef STRATA_CCRC32C_H
#define STRATA_CCRC32C_H
#include <stddef.h>
#include <stdint.h>

/// How a checksum is computed; every method gives the same value.
enum {
  STRATA_CRC32C_PORTABLE = 0,    ///< a table loop, one byte at a time (any CPU)
  STRATA_CRC32C_INTERLEAVED = 1, ///< the SSE4.2 `crc32` instruction on three interleaved streams
  STRATA_CRC32C_FOLDED = 2,      ///< PCLMULQDQ folding of 128-bit lanes, `crc32` for the last 16 bytes
  STRATA_CRC32C_WIDE = 3,        ///< the same folding on 512-bit registers (AVX-512 VPCLMULQDQ)
};

/// Extends `crc` (0 for a fresh checksum) over `length` bytes at `data`, with the standard
/// pre- and post-inversion: crc32c("123456789") == 0xE3069283. Uses `strata_crc32c_method()`.
uint32_t strata_crc32c(uint32_t crc, const void *data, size_t length);

/// Copies `length` bytes from `source` to `destination` (which must not overlap) and returns the
/// CRC-32C of those bytes continuing `crc`, in one pass: each word is checksummed from the register
/// it is stored from, so the checksum is of the bytes written even if the source changes meanwhile.
uint32_t strata_crc32c_copy(uint32_t crc, void *destination, const void *source, size_t length);

/// The CRC-32C of A followed by B, from `crc_a` (A's), `crc_b` (B's, computed from 0) and B's
/// length: parts of one block checksummed apart (on different threads) give the block's checksum.
uint32_t strata_crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t length_b);

/// The method `strata_crc32c` and `strata_crc32c_copy` use: the fastest this CPU has, measured
/// once when the library is loaded (16 checksums of 48 KiB by each method, ~0.2 ms).
int strata_crc32c_method(void);

/// Bit `1 << method` is set for each method this CPU can run (the portable one always).
int strata_crc32c_available_methods(void);

/// `strata_crc32c` with a given method (one this CPU can run; otherwise the portable one), for
/// tests and benchmarks.
uint32_t strata_crc32c_using(int method, uint32_t crc, const void *data, size_t length);

/// `strata_crc32c_copy` with a given method (as `strata_crc32c_using`).
uint32_t strata_crc32c_copy_using(int method, uint32_t crc, void *destination, const void *source,
                                  size_t length);

#endif
