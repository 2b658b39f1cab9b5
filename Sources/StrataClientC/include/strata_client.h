/*
 * strata_client.h: the C ABI of the Strata client library (libstrata_client.so).
 *
 * Lets workers written in C, C++ or Python (ctypes, cffi) look up, read, write and delete
 * KV-cache blocks on a Strata node, and compute block keys exactly as Strata does.
 * Build: swift build -c release --product strata_client
 * Link:  -I Sources/StrataClientC/include -L <build dir> -lstrata_client -Wl,-rpath,<build dir>
 * Guide: docs/client.md.
 *
 * Conventions
 *   - Every call but strata_client_close and strata_last_error returns 0 on success, otherwise
 *     the stable number of the failure's error code (below); strata_last_error() then says what
 *     went wrong in words. No exception, signal or Swift error ever crosses this boundary.
 *   - All memory is the caller's: keys, block buffers, result arrays. The library never keeps a
 *     pointer after a call returns and never allocates memory the caller must free.
 *   - A block key is 32 bytes; arrays of keys are `count` keys laid end to end (count x 32 bytes).
 *   - Per-item outcomes (a missing block, a block already present) are reported in the result
 *     arrays and the call still returns 0; a nonzero return means the whole call failed, and then
 *     the result arrays hold nothing meaningful.
 *   - Calls block the calling thread until they finish (bounded by the client's timeout and
 *     retries). Do not call them from a Swift concurrency thread. The strata_submit_* calls are the
 *     exception: they return a ticket at once and report through strata_poll_completions.
 *   - Thread safety: every call on one strata_client may be made from many threads at once
 *     (lookups, reads, writes, submissions, polls, registrations); calls share its pool of
 *     connections, and the completion queue and the registry of memory are locked. Only
 *     strata_client_close must not race with other calls on that client. strata_last_error and
 *     strata_hash_prefix need no client and are safe from any thread.
 *   - NULL pointers and impossible counts are rejected with code 1 (invalid argument). A pointer
 *     may be NULL only where its count or length is 0.
 *
 * Error codes (StrataError.Code; numbers are stable and never reused)
 *    1  invalid argument       a NULL pointer, a bad count, a malformed key, layout or token,
 *                              a result buffer too small
 *    2  invalid configuration
 *    3  not found
 *    4  already exists
 *    5  checksum mismatch
 *    6  resource exhausted     a node limit (capacity, connections, in-flight bytes) was reached
 *    7  I/O error              the operating system reported an I/O failure
 *    8  protocol error         a peer sent bytes that break the protocol
 *    9  unavailable            the node cannot be reached now; the same call may succeed later
 *   10  timeout                the call did not finish within the client's timeout (and retries)
 *   11  permission denied      the token does not allow the operation
 *   12  unsupported            the platform or build lacks what the operation needs
 *   13  stale epoch
 *   14  cancelled
 *   15  internal               a broken invariant inside Strata: a bug to report
 */

#ifndef STRATA_CLIENT_H
#define STRATA_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Bytes in one block key. */
#define STRATA_KEY_BYTES 32

/** Error codes returned by the calls below (0 is success). */
#define STRATA_OK 0
#define STRATA_E_INVALID_ARGUMENT 1
#define STRATA_E_INVALID_CONFIGURATION 2
#define STRATA_E_NOT_FOUND 3
#define STRATA_E_ALREADY_EXISTS 4
#define STRATA_E_CHECKSUM_MISMATCH 5
#define STRATA_E_RESOURCE_EXHAUSTED 6
#define STRATA_E_IO 7
#define STRATA_E_PROTOCOL 8
#define STRATA_E_UNAVAILABLE 9
#define STRATA_E_TIMEOUT 10
#define STRATA_E_PERMISSION_DENIED 11
#define STRATA_E_UNSUPPORTED 12
#define STRATA_E_STALE_EPOCH 13
#define STRATA_E_CANCELLED 14
#define STRATA_E_INTERNAL 15
#define STRATA_E_QUORUM_NOT_REACHED 16

/** strata_lookup tiers. */
#define STRATA_TIER_ABSENT 0
#define STRATA_TIER_RAM 1
#define STRATA_TIER_NVME 2

/** strata_get lengths: a non-negative value is the number of bytes read. */
#define STRATA_GET_MISSING (-1)
#define STRATA_GET_CORRUPT (-2)
#define STRATA_GET_DESTINATION_TOO_SMALL (-3)
#define STRATA_GET_OUT_OF_RANGE (-4)
/** strata_getv only: a block read whole into several segments is not exactly their total length. */
#define STRATA_GET_SIZE_MISMATCH (-5)

/** strata_put outcomes. */
#define STRATA_PUT_STORED 0
#define STRATA_PUT_ALREADY_PRESENT 1
#define STRATA_PUT_CHECKSUM_MISMATCH 2
#define STRATA_PUT_TOO_LARGE 3
#define STRATA_PUT_NO_SPACE 4

/** strata_completion operations. */
#define STRATA_OP_LOOKUP 1
#define STRATA_OP_GET 2
#define STRATA_OP_PUT 3
#define STRATA_OP_DELETE 4

/** A connection pool to one node, or to every node of a cluster. Opaque; created by strata_client_open. */
typedef struct strata_client strata_client;

/**
 * Connects to the node at `host_port` ("HOST:PORT" or "[IPv6]:PORT") and says HELLO on every
 * connection of the pool, so that a bad address or token fails here and not on first use.
 * Several comma-separated addresses ("A:7400,B:7400,C:7400") name a cluster: the client fetches
 * the ring from the first that answers, connects to every member, and routes each key to its
 * owners (docs/cluster.md).
 *
 * token:       credentials the node maps to a namespace; NULL or "" for none.
 * connections: connections in the pool (0 means the default, 2); at most 1024.
 * timeout_ms:  bounds a connect and every read and write of a request (0 means 30000).
 * out:         receives the client on success (and NULL on failure).
 *
 * Returns 0, or an error code (9 unavailable when nothing listens there, 11 for a refused token).
 * A failed call closes whatever it opened.
 */
int strata_client_open(const char *host_port, const char *token, int connections, uint32_t timeout_ms,
                       strata_client **out);

/**
 * strata_client_open over TLS 1.3: every connection verifies the node's certificate against the
 * CA certificates (PEM) in `ca_file` and checks that it names the host connected to (a DNS name
 * or an IP address in its subject alternative names).
 *
 * ca_file:    the CA that signed the nodes' certificates (required).
 * cert_file:  a client certificate chain (PEM) to present, or NULL for none; with key_file.
 * key_file:   the private key of cert_file (PEM), or NULL.
 *
 * Returns 0, or an error code: 2 invalid configuration for a file that cannot be read or a key
 * that does not match its certificate; 11 permission denied when the node's certificate does not
 * verify (strata_last_error says why: "certificate has expired", "self-signed certificate in
 * certificate chain", ...) or the node refuses the client's; 9 unavailable when the node closes
 * the handshake (a plaintext node, or one that requires a client certificate).
 */
int strata_client_open_tls(const char *host_port, const char *token, int connections, uint32_t timeout_ms,
                           const char *ca_file, const char *cert_file, const char *key_file, strata_client **out);

/**
 * strata_client_open with the same-host path's options (docs/client.md, "Same-host path").
 * strata_client_open is this call with same_host 1 and shared_memory_bytes 0.
 *
 * same_host:           1: when the node runs on this machine, connect over its Unix socket (learned
 *                      from its HELLO answer; TCP when that fails); 0: TCP only.
 * shared_memory_bytes: shared memory (a sealed memfd) to allocate for blocks, rounded up to whole
 *                      pages; 0 for none. strata_get into it and strata_put from it over the
 *                      same-host path move each block with one copy, made by the node.
 * ca_file, cert_file, key_file: as for strata_client_open_tls, or all NULL for plaintext. TLS
 *                      covers the TCP connections; the same-host path (a local Unix socket, mode
 *                      0660, the node id checked) stays plaintext.
 */
int strata_client_open_options(const char *host_port, const char *token, int connections, uint32_t timeout_ms,
                               int same_host, uint64_t shared_memory_bytes, const char *ca_file,
                               const char *cert_file, const char *key_file, strata_client **out);

/**
 * The client's shared memory (strata_client_open_options): *base_out and *length_out receive its
 * address and size, or NULL and 0 when it has none. The memory belongs to the client and stays
 * valid until strata_client_close; carve block buffers out of it.
 */
int strata_shared_memory(strata_client *c, void **base_out, uint64_t *length_out);

/** Says GOODBYE, closes every connection and frees the client. NULL is ignored. */
void strata_client_close(strata_client *client);

/**
 * Which of `count` keys the node holds, and where.
 *
 * keys:            count x 32 bytes, in prompt order.
 * tiers_out:       count entries: 0 absent, 1 RAM, 2 NVMe.
 * leading_run_out: how many leading keys are present: the prefix a worker can load instead of
 *                  recomputing. May be NULL.
 */
int strata_lookup(strata_client *c, const uint8_t *keys, size_t count, uint8_t *tiers_out, size_t *leading_run_out);

/**
 * Reads whole blocks into caller memory: block i into destinations[i], which holds
 * capacities[i] bytes. Batches are split and read in parallel over the pool.
 *
 * lengths_out: count entries: the bytes read (the block's length), or
 *              -1 missing, -2 corrupt (failed its checksum: never delivered as data; bytes
 *              received into the destination are zeroed),
 *              -3 the destination is smaller than the block (nothing was written to it),
 *              -4 the requested range lies outside the block.
 * A destination may be NULL only when its capacity is 0.
 */
int strata_get(strata_client *c, const uint8_t *keys, size_t count, void *const *destinations,
               const uint64_t *capacities, int64_t *lengths_out);

/**
 * strata_get into CUDA device memory of GPU `device`: destinations are device pointers. Over RDMA
 * the node writes into GPU memory directly where the NIC can reach it; otherwise blocks are
 * received through a pinned host staging ring and copied to the GPU asynchronously (all copies
 * have landed when this returns). The CUDA runtime is loaded on first use (dlopen of libcudart,
 * or the path in STRATA_CUDA_RUNTIME); without it this fails with STRATA_E_UNSUPPORTED and a
 * message saying so. See docs/rdma.md.
 */
int strata_get_gpu(strata_client *c, int device, const uint8_t *keys, size_t count, void *const *destinations,
                   const uint64_t *capacities, int64_t *lengths_out);

/**
 * Writes blocks: block i is lengths[i] bytes at sources[i]. Blocks are immutable: writing a key
 * that exists already leaves the stored block as it is (outcome 1).
 *
 * outcomes_out: count entries: 0 stored, 1 already present, 2 checksum mismatch (the bytes
 *               changed on the way; nothing stored), 3 larger than the node's block size limit,
 *               4 no space on the node.
 * A source may be NULL only when its length is 0.
 */
int strata_put(strata_client *c, const uint8_t *keys, size_t count, const void *const *sources,
               const uint64_t *lengths, uint8_t *outcomes_out);

/** Deletes blocks. removed_out: count entries, 1 when the key was there and is now gone, else 0. */
int strata_delete(strata_client *c, const uint8_t *keys, size_t count, uint8_t *removed_out);

/**
 * The node's counters as a JSON object, written to json_out with a terminating NUL.
 *
 * length_out: receives the JSON's length in bytes, not counting the NUL. May be NULL.
 * When json_out (capacity bytes) cannot hold the JSON and its NUL, returns 1 with *length_out
 * set to the length needed (minus the NUL) and json_out holding a truncated, NUL-terminated
 * prefix (if capacity > 0). json_out may be NULL when capacity is 0.
 */
int strata_stat(strata_client *c, char *json_out, size_t capacity, size_t *length_out);

/**
 * The message of the last failed call on this thread ("" if none has failed). Successful calls
 * leave it unchanged. The string is owned by the library and stays valid until the next failed
 * call on the same thread.
 */
const char *strata_last_error(void);

/**
 * The block keys of a token sequence (docs/keys.md): key[i] chains the layout, the salt and
 * the tokens of blocks 0..i, so equal prefixes give equal keys on every worker. Only full blocks
 * are keyed; a partial tail block has no key. Needs no client or node.
 *
 * layout:        "model=NAME,dtype=bf16,block=16,tp=0/1,layers=0-32" (tp defaults to 0/1; layers
 *                is start-end with end exclusive; NAME may not contain ',').
 * salt:          up to 1024 bytes that separate tenants or adapters (NULL when salt_len is 0).
 * tokens:        token_count token ids (NULL when token_count is 0).
 * keys_out:      room for keys_capacity keys (keys_capacity x 32 bytes; NULL when keys_capacity is 0).
 * key_count_out: receives the number of keys, token_count / tokens per block.
 * When keys_capacity is too small, returns 1 with *key_count_out set to the number needed.
 */
int strata_hash_prefix(const char *layout, const uint8_t *salt, size_t salt_len, const uint32_t *tokens,
                       size_t token_count, uint8_t *keys_out, size_t keys_capacity, size_t *key_count_out);

/* ---------------------------------------------------------------------------------------------
 * Leases, sizes, vectored I/O, registered memory and asynchronous submission (docs/client.md).
 * ------------------------------------------------------------------------------------------- */

/** One piece of a block in caller memory (64-bit machines: 16 bytes). */
typedef struct strata_segment {
  void *base;      /* NULL only when length is 0 */
  uint64_t length; /* bytes */
} strata_segment;

/**
 * strata_lookup that can pin the leading run under a lease and report block lengths.
 *
 * lease_ms:        0 for no lease; otherwise the node pins the leading run of present blocks for
 *                  this long and *lease_out receives the lease id (0 when none was granted). Name
 *                  it in strata_getv to read the pinned blocks; that read releases the lease. With
 *                  a lease, count is at most 4096 (one batch).
 * tiers_out:       count entries, as strata_lookup (may be NULL).
 * sizes_out:       count entries: each present block's length in bytes, 0 for an absent one. May
 *                  be NULL, which saves the node measuring them (the LOOKUP asks for lengths in
 *                  the same round trip only when sizes_out is given; docs/client.md, "Sizes").
 * leading_run_out: may be NULL. lease_out: may be NULL.
 */
int strata_lookup_leased(strata_client *c, const uint8_t *keys, size_t count, uint32_t lease_ms, uint8_t *tiers_out,
                         uint64_t *sizes_out, size_t *leading_run_out, uint64_t *lease_out);

/**
 * Reads blocks into segments of caller memory: key i into segment_counts[i] (1 to 65536)
 * consecutive entries of `segments`, filled in order (scatter). One request carries the batch; the
 * checksum covers each block's bytes over all its segments.
 *
 * lease:       0, or a lease id from strata_lookup_leased (released by this read).
 * offsets:     NULL reads whole blocks: a block read into one segment must fit it (as strata_get);
 *              a block read into several must be exactly their total length, else -5.
 *              Non-NULL: count entries; key i reads exactly its segments' total length starting at
 *              byte offsets[i] of the block (layer-wise loading); -4 when that range is outside.
 * lengths_out: count entries: bytes read, or -1 missing, -2 corrupt (segments zeroed), -3 the
 *              block is larger than the single segment (untouched), -4 out of range, -5 size
 *              mismatch (the segments hold nothing meaningful).
 */
int strata_getv(strata_client *c, const uint8_t *keys, size_t count, uint64_t lease, const strata_segment *segments,
                const size_t *segment_counts, const uint64_t *offsets, int64_t *lengths_out);

/**
 * Writes blocks gathered from segments: block i is the concatenation of segment_counts[i]
 * (1 to 65536) consecutive entries of `segments`. Outcomes as strata_put.
 */
int strata_putv(strata_client *c, const uint8_t *keys, size_t count, const strata_segment *segments,
                const size_t *segment_counts, uint8_t *outcomes_out);

/**
 * Registers `length` bytes of host memory at `base` (a pinned KV pool) once: every later call whose
 * buffers lie inside it reuses its memory region (over RDMA it is registered with the device once).
 * Over TCP the range is validated and recorded. Ranges may not overlap; at most 4096 per client.
 * Returns 4 (already exists) for the same range twice, 1 for an overlap or length 0, 6 when full.
 * The memory must stay valid until strata_unregister and until calls using it have finished.
 */
int strata_register(strata_client *c, void *base, uint64_t length);

/** Forgets the range registered at `base`. Returns 3 (not found) when none starts there. */
int strata_unregister(strata_client *c, void *base);

/** A finished submission (256 bytes). */
typedef struct strata_completion {
  uint64_t ticket;      /* as returned by strata_submit_* */
  int32_t status;       /* 0, or the error code of the whole call (its result array is then meaningless) */
  uint32_t operation;   /* STRATA_OP_* */
  uint64_t leading_run; /* lookup: the leading run */
  uint64_t lease;       /* lookup: the lease id, 0 for none */
  char message[224];    /* status != 0: what went wrong (NUL-terminated, may be truncated) */
} strata_completion;

/**
 * Submissions: the same calls as strata_lookup_leased, strata_getv, strata_putv and
 * strata_delete, but they return as soon as the arguments are checked (an invalid argument is
 * still returned here, and then no ticket exists) with a ticket in *ticket_out. Keys and the
 * segment lists are copied; the block memory and the result arrays are written or read while the
 * call runs: keep them valid and untouched until its completion is polled. Many tickets may be in
 * flight per client (at most 65536 in flight or unpolled; beyond that 6, resource exhausted).
 */
int strata_submit_lookup(strata_client *c, const uint8_t *keys, size_t count, uint32_t lease_ms, uint8_t *tiers_out,
                         uint64_t *sizes_out, uint64_t *ticket_out);
int strata_submit_get(strata_client *c, const uint8_t *keys, size_t count, uint64_t lease,
                      const strata_segment *segments, const size_t *segment_counts, const uint64_t *offsets,
                      int64_t *lengths_out, uint64_t *ticket_out);
int strata_submit_put(strata_client *c, const uint8_t *keys, size_t count, const strata_segment *segments,
                      const size_t *segment_counts, uint8_t *outcomes_out, uint64_t *ticket_out);
int strata_submit_delete(strata_client *c, const uint8_t *keys, size_t count, uint8_t *removed_out,
                         uint64_t *ticket_out);

/**
 * The client's completion descriptor: an eventfd on Linux (the read end of a pipe elsewhere),
 * non-blocking and close-on-exec, readable exactly while completions wait to be polled. Watch it
 * with poll/epoll/select or an event loop; do not read from it or close it (strata_client_close
 * does). The same descriptor for the client's whole life.
 */
int strata_completion_fd(strata_client *c, int *fd_out);

/**
 * Moves up to `capacity` finished submissions, oldest first, into completions_out and sets
 * *count_out (0 when none is ready: never blocks). A completion is delivered once.
 * strata_client_close waits for submissions in flight to finish and drops unpolled completions.
 */
int strata_poll_completions(strata_client *c, strata_completion *completions_out, size_t capacity, size_t *count_out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* STRATA_CLIENT_H */
