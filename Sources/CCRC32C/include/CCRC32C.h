// CRC-32C (Castagnoli), the block checksum of the data path.
#ifndef STRATA_CCRC32C_H
#define STRATA_CCRC32C_H
#include <stddef.h>
#include <stdint.h>

/// Extends `crc` (0 for a fresh checksum) over `length` bytes at `data`, with the standard
/// pre- and post-inversion: crc32c("123456789") == 0xE3069283.
uint32_t strata_crc32c(uint32_t crc, const void *data, size_t length);

/// The same checksum computed one byte at a time from a table; a reference for tests.
uint32_t strata_crc32c_portable(uint32_t crc, const void *data, size_t length);

/// 1 when strata_crc32c uses the CPU's CRC32 instruction, else 0.
int strata_crc32c_hardware(void);

/// Copies `length` bytes from `source` to `destination` (which must not overlap) and returns the
/// CRC-32C of those bytes continuing `crc`, in one pass: each word is checksummed from the register
/// it is stored from, so the checksum is of the bytes written even if the source changes meanwhile.
uint32_t strata_crc32c_copy(uint32_t crc, void *destination, const void *source, size_t length);

#endif
