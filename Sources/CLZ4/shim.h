// liblz4 for Swift: the block API is plain functions; LZ4_COMPRESSBOUND is a macro, wrapped here.
#ifndef STRATA_CLZ4_SHIM_H
#define STRATA_CLZ4_SHIM_H
#include <lz4.h>

static inline int strata_lz4_compress_bound(int input_size) { return LZ4_COMPRESSBOUND(input_size); }

#endif
