/*
 * c_abi_test.c: exercises libstrata_client through its C header only, against a running node.
 *
 *   cc -std=c11 -Wall -Wextra -pthread -I Sources/StrataClientC/include Tests/CABI/c_abi_test.c \
 *      -L <dir> -lstrata_client -Wl,-rpath,<dir> -o c_abi_test
 *   ./c_abi_test HOST:PORT [BLOCKS [SEED]]
 *
 * Writes BLOCKS (default 300) blocks of 1 KiB to 2 MiB with content derived from SEED, reads them
 * back into fresh buffers (in one batch and from several threads sharing the client) and compares
 * every byte; checks lookup's leading run, a missing key, a destination too small, delete, stat,
 * argument validation, and strata_hash_prefix against Tests/Fixtures/key-vectors.json case 0.
 * Then the extended calls: registered memory, strata_putv / strata_getv (scatter, gather, ranges,
 * wrong sizes), strata_lookup_leased (leases, sizes) and submissions from several threads drained
 * through the completion descriptor, each compared byte for byte.
 * Prints "c-abi: P passed, F failed" and exits 1 if F > 0 (2 on bad usage).
 */

#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "strata_client.h"

static int passed = 0;
static int failed = 0;

static void check(int ok, const char *what) {
  if (ok) {
    passed++;
  } else {
    failed++;
    fprintf(stderr, "FAIL: %s (last error: %s)\n", what, strata_last_error());
  }
}

static uint64_t mix(uint64_t x) { /* splitmix64 */
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/* The deterministic content of block `index`. */
static void fill(uint8_t *out, uint64_t length, uint64_t seed, size_t index) {
  uint64_t state = mix(seed ^ mix(index + 1));
  for (uint64_t i = 0; i < length; i += 8) {
    state = mix(state);
    for (uint64_t j = 0; j < 8 && i + j < length; j++) out[i + j] = (uint8_t)(state >> (8 * j));
  }
}

static void hex(const uint8_t *key, char out[65]) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    out[2 * i] = digits[key[i] >> 4];
    out[2 * i + 1] = digits[key[i] & 15];
  }
  out[64] = 0;
}

/* Tests/Fixtures/key-vectors.json, case 0 ("basic-two-blocks"). */
static void check_hash_vector(void) {
  static const uint32_t tokens[32] = {25607,  6003,   86835,  70744, 77201,  71215,  67342, 112154,
                                      89673,  97345,  8914,   78248, 100271, 26371,  89260, 124549,
                                      85406,  121166, 9321,   125324, 119945, 91638, 24269, 17876,
                                      101417, 7093,   30317,  81654, 72916,  59506,  114234, 58574};
  static const char *layout = "model=meta-llama/Llama-3.1-8B-Instruct,dtype=bf16,block=16,tp=0/1,layers=0-32";
  static const char *expected[2] = {"80923840552d229f64fbbbca12063c6537c183d715ac372df5c441fcc27150aa",
                                    "2a424025928de4a9a1a343c8b54f477ade826d45c8b0e9b1b315220849df0a9e"};
  uint8_t keys[3 * STRATA_KEY_BYTES];
  size_t count = 0;
  check(strata_hash_prefix(layout, NULL, 0, tokens, 32, keys, 3, &count) == 0 && count == 2,
        "hash_prefix: 32 tokens at 16 per block give 2 keys");
  char text[65];
  hex(keys, text);
  check(strcmp(text, expected[0]) == 0, "hash_prefix: key 0 matches key-vectors.json case 0");
  if (strcmp(text, expected[0]) != 0) fprintf(stderr, "  got %s\n  expected %s\n", text, expected[0]);
  hex(keys + STRATA_KEY_BYTES, text);
  check(strcmp(text, expected[1]) == 0, "hash_prefix: key 1 matches key-vectors.json case 0");

  /* A partial tail block has no key; a short keys_out is reported with the count needed. */
  check(strata_hash_prefix(layout, NULL, 0, tokens, 31, keys, 3, &count) == 0 && count == 1,
        "hash_prefix: a partial tail block is not keyed");
  count = 0;
  check(strata_hash_prefix(layout, NULL, 0, tokens, 32, NULL, 0, &count) == STRATA_E_INVALID_ARGUMENT && count == 2,
        "hash_prefix: a too small keys_out returns 1 and the count needed");
  check(strata_hash_prefix("model=x,dtype=BF16,block=16,layers=0-1", NULL, 0, tokens, 32, keys, 3, &count) ==
                STRATA_E_INVALID_ARGUMENT &&
            strstr(strata_last_error(), "dtype") != NULL,
        "hash_prefix: a bad layout returns 1 and names the field");
  check(strata_hash_prefix(layout, NULL, 0, NULL, 32, keys, 3, &count) == STRATA_E_INVALID_ARGUMENT,
        "hash_prefix: NULL tokens with a nonzero count returns 1");
  uint8_t salt[4] = {1, 2, 3, 4};
  uint8_t salted[STRATA_KEY_BYTES];
  check(strata_hash_prefix(layout, salt, 4, tokens, 16, salted, 1, &count) == 0 && count == 1 &&
            memcmp(salted, keys, STRATA_KEY_BYTES) != 0,
        "hash_prefix: a salt changes the key");
}

struct reader {
  strata_client *client;
  const uint8_t *keys;
  const uint64_t *lengths;
  size_t first, count;
  uint64_t seed;
  int ok;
  int thread_error_ok;
};

/* Reads its share of the blocks (one at a time) and compares them. */
static void *read_share(void *argument) {
  struct reader *r = argument;
  r->ok = 1;
  for (size_t i = r->first; i < r->first + r->count; i++) {
    uint8_t *buffer = malloc(r->lengths[i]);
    uint8_t *expected = malloc(r->lengths[i]);
    void *destinations[1] = {buffer};
    int64_t length = 0;
    fill(expected, r->lengths[i], r->seed, i);
    int rc = strata_get(r->client, r->keys + i * STRATA_KEY_BYTES, 1, destinations, &r->lengths[i], &length);
    if (rc != 0 || length != (int64_t)r->lengths[i] || memcmp(buffer, expected, r->lengths[i]) != 0) r->ok = 0;
    free(buffer);
    free(expected);
  }
  /* A failure on this thread sets this thread's message only. */
  r->thread_error_ok = strata_lookup(r->client, NULL, 1, NULL, NULL) == STRATA_E_INVALID_ARGUMENT &&
                       strstr(strata_last_error(), "keys is NULL") != NULL;
  return NULL;
}

/* ---- The extended calls ------------------------------------------------------------------- */

enum { XBLOCKS = 24, XSEGS = 3, SUBMITTERS = 4, PER_SUBMITTER = 12 };

/* Block i of the extended test: XSEGS pieces of a length that depends on i (the pieces differ too). */
static uint64_t piece_length(size_t i, int piece) { return 4096 + (uint64_t)(mix(i * 7 + (size_t)piece) % 60000); }

struct submitter {
  strata_client *client;
  const uint8_t *keys;
  const uint64_t *lengths;
  uint8_t *const *blocks;
  size_t first;
  uint64_t tickets[PER_SUBMITTER];
  uint8_t *copies[PER_SUBMITTER];
  int64_t read[PER_SUBMITTER];
  strata_segment segment[PER_SUBMITTER];
  size_t one[PER_SUBMITTER];
  int ok;
};

/* Submits one GET per block of its share, each its own ticket. */
static void *submit_share(void *argument) {
  struct submitter *s = argument;
  s->ok = 1;
  for (int t = 0; t < PER_SUBMITTER; t++) {
    size_t i = s->first + (size_t)t;
    s->copies[t] = malloc(s->lengths[i]);
    memset(s->copies[t], 0x33, s->lengths[i]);
    s->segment[t] = (strata_segment){s->copies[t], s->lengths[i]};
    s->one[t] = 1;
    s->read[t] = -100;
    s->tickets[t] = 0;
    if (strata_submit_get(s->client, s->keys + i * STRATA_KEY_BYTES, 1, 0, &s->segment[t], &s->one[t], NULL,
                          &s->read[t], &s->tickets[t]) != 0 ||
        s->tickets[t] == 0)
      s->ok = 0;
  }
  return NULL;
}

static int fd_readable(int fd, int timeout_ms) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

/* Polls completions until `expected` have arrived (or 60 s pass); returns how many arrived. */
static size_t drain(strata_client *client, int fd, strata_completion *out, size_t expected) {
  size_t got = 0;
  time_t deadline = time(NULL) + 60;
  while (got < expected && time(NULL) < deadline) {
    if (!fd_readable(fd, 1000)) continue;
    size_t n = 0;
    if (strata_poll_completions(client, out + got, expected - got, &n) != 0) break;
    got += n;
  }
  return got;
}

static void check_extended(strata_client *client, uint64_t nonce, const uint8_t *old_keys, const uint64_t *old_lengths,
                           size_t n, const uint8_t *missing) {
  /* Keys of their own (another salt). */
  uint32_t tokens[XBLOCKS * 16 + SUBMITTERS * PER_SUBMITTER * 16];
  size_t nx = XBLOCKS + SUBMITTERS * PER_SUBMITTER;
  for (size_t i = 0; i < nx * 16; i++) tokens[i] = (uint32_t)(mix(nonce + i) % 100000);
  uint64_t salt = nonce ^ 0xE57E4D3Dull;
  uint8_t *keys = malloc(nx * STRATA_KEY_BYTES);
  size_t key_count = 0;
  check(strata_hash_prefix("model=c-abi-test,dtype=bf16,block=16,tp=0/1,layers=0-1", (const uint8_t *)&salt,
                           sizeof salt, tokens, nx * 16, keys, nx, &key_count) == 0 &&
            key_count == nx,
        "hash_prefix: keys of the extended test");

  /* Registered memory: one pool holds every piece, laid out in reverse block order (scattered). */
  uint64_t offsets[XBLOCKS][XSEGS], lengths[XBLOCKS], pool_bytes = 0;
  for (size_t i = 0; i < XBLOCKS; i++) {
    lengths[i] = 0;
    for (int p = 0; p < XSEGS; p++) lengths[i] += piece_length(i, p);
  }
  for (size_t k = XBLOCKS; k-- > 0;)
    for (int p = XSEGS; p-- > 0;) {
      offsets[k][p] = pool_bytes;
      pool_bytes += piece_length(k, p);
    }
  uint8_t *pool = malloc(pool_bytes);
  uint8_t *contiguous = malloc(XBLOCKS * 3 * 65536);
  check(strata_register(client, pool, pool_bytes) == 0, "register: a pool of host memory");
  check(strata_register(client, pool, pool_bytes) == STRATA_E_ALREADY_EXISTS, "register: the same range again is 4");
  check(strata_register(client, pool + 10, 100) == STRATA_E_INVALID_ARGUMENT &&
            strstr(strata_last_error(), "overlap") != NULL,
        "register: an overlapping range is 1 and says so");
  check(strata_register(client, contiguous, 0) == STRATA_E_INVALID_ARGUMENT, "register: length 0 is 1");
  check(strata_register(client, NULL, 10) == STRATA_E_INVALID_ARGUMENT, "register: NULL is 1");
  check(strata_unregister(client, contiguous) == STRATA_E_NOT_FOUND, "unregister: an unknown base is 3");

  /* putv: each block gathered from its XSEGS pieces in the pool. */
  strata_segment segments[XBLOCKS * XSEGS];
  size_t counts[XBLOCKS];
  for (size_t i = 0; i < XBLOCKS; i++) {
    counts[i] = XSEGS;
    uint64_t at = 0;
    for (int p = 0; p < XSEGS; p++) {
      uint64_t len = piece_length(i, p);
      fill(pool + offsets[i][p], len, nonce + (uint64_t)p, i); /* piece p of block i */
      memcpy(contiguous + i * 3 * 65536 + at, pool + offsets[i][p], len);
      segments[i * XSEGS + (size_t)p] = (strata_segment){pool + offsets[i][p], len};
      at += len;
    }
  }
  uint8_t outcomes[XBLOCKS];
  memset(outcomes, 0xFF, sizeof outcomes);
  int rc = strata_putv(client, keys, XBLOCKS, segments, counts, outcomes);
  size_t stored = 0;
  for (size_t i = 0; i < XBLOCKS; i++) stored += outcomes[i] == STRATA_PUT_STORED;
  check(rc == 0 && stored == XBLOCKS, "putv: every gathered block is stored");
  rc = strata_putv(client, keys, 1, segments, counts, outcomes);
  check(rc == 0 && outcomes[0] == STRATA_PUT_ALREADY_PRESENT, "putv: again is already present");

  /* What putv stored is the concatenation of the pieces: read whole into one buffer. */
  size_t same = 0;
  for (size_t i = 0; i < XBLOCKS; i++) {
    uint8_t *copy = malloc(lengths[i]);
    void *destinations[1] = {copy};
    int64_t got = 0;
    if (strata_get(client, keys + i * STRATA_KEY_BYTES, 1, destinations, &lengths[i], &got) == 0 &&
        got == (int64_t)lengths[i] && memcmp(copy, contiguous + i * 3 * 65536, lengths[i]) == 0)
      same++;
    free(copy);
  }
  check(same == XBLOCKS, "putv: each block is the concatenation of its segments, byte for byte");

  /* getv: scatter each block back into the pool's pieces (cleared first) and compare. */
  memset(pool, 0, pool_bytes);
  int64_t got[XBLOCKS];
  for (size_t i = 0; i < XBLOCKS; i++) got[i] = -100;
  rc = strata_getv(client, keys, XBLOCKS, 0, segments, counts, NULL, got);
  same = 0;
  for (size_t i = 0; i < XBLOCKS; i++) {
    int ok = got[i] == (int64_t)lengths[i];
    uint64_t at = 0;
    for (int p = 0; p < XSEGS && ok; p++) {
      ok = memcmp(pool + offsets[i][p], contiguous + i * 3 * 65536 + at, piece_length(i, p)) == 0;
      at += piece_length(i, p);
    }
    same += ok;
  }
  check(rc == 0 && same == XBLOCKS, "getv: scattered reads fill every segment byte for byte");

  /* getv ranges: bytes [1000, 1000 + 5000) of block 0 into two segments. */
  uint8_t part_a[3000], part_b[2000];
  strata_segment parts[2] = {{part_a, sizeof part_a}, {part_b, sizeof part_b}};
  size_t two = 2;
  uint64_t offset = 1000;
  int64_t range_got = 0;
  rc = strata_getv(client, keys, 1, 0, parts, &two, &offset, &range_got);
  check(rc == 0 && range_got == 5000 && memcmp(part_a, contiguous + 1000, 3000) == 0 &&
            memcmp(part_b, contiguous + 4000, 2000) == 0,
        "getv: a range read into two segments matches the block's bytes there");
  offset = lengths[0] - 10;
  rc = strata_getv(client, keys, 1, 0, parts, &two, &offset, &range_got);
  check(rc == 0 && range_got == STRATA_GET_OUT_OF_RANGE, "getv: a range past the end is -4");

  /* Wrong sizes: several segments must add up to the block exactly; one segment must hold it. */
  uint8_t *big = malloc(lengths[0] + 64);
  strata_segment wrong[2] = {{big, lengths[0] - 100}, {big + lengths[0] - 100, 164}}; /* 64 too many */
  rc = strata_getv(client, keys, 1, 0, wrong, &two, NULL, &range_got);
  check(rc == 0 && range_got == STRATA_GET_SIZE_MISMATCH, "getv: segments longer than the block are -5");
  wrong[1].length = 36; /* 64 too few */
  rc = strata_getv(client, keys, 1, 0, wrong, &two, NULL, &range_got);
  check(rc == 0 && range_got == STRATA_GET_SIZE_MISMATCH, "getv: segments shorter than the block are -5");
  strata_segment single = {big, lengths[0] - 1};
  size_t one = 1;
  rc = strata_getv(client, keys, 1, 0, &single, &one, NULL, &range_got);
  check(rc == 0 && range_got == STRATA_GET_DESTINATION_TOO_SMALL, "getv: one segment one byte short is -3");
  rc = strata_getv(client, missing, 1, 0, &single, &one, NULL, &range_got);
  check(rc == 0 && range_got == STRATA_GET_MISSING, "getv: a missing key is -1");
  size_t zero_segments = 0;
  check(strata_getv(client, keys, 1, 0, &single, &zero_segments, NULL, &range_got) == STRATA_E_INVALID_ARGUMENT &&
            strstr(strata_last_error(), "segment_counts[0]") != NULL,
        "getv: zero segments for a key is 1 and names it");
  strata_segment null_segment = {NULL, 10};
  check(strata_getv(client, keys, 1, 0, &null_segment, &one, NULL, &range_got) == STRATA_E_INVALID_ARGUMENT,
        "getv: a NULL segment with a length is 1");
  free(big);

  /* lookup_leased: sizes of blocks of differing lengths (the first n of the main test), a gap. */
  size_t m = n < 40 ? n : 40;
  uint8_t *mixed = malloc((m + 1) * STRATA_KEY_BYTES);
  memcpy(mixed, old_keys, m * STRATA_KEY_BYTES);
  memcpy(mixed + m * STRATA_KEY_BYTES, missing, STRATA_KEY_BYTES);
  uint64_t *sizes = malloc((m + 1) * sizeof *sizes);
  uint8_t *tiers = malloc(m + 1);
  size_t run = 0;
  uint64_t lease = 99;
  rc = strata_lookup_leased(client, mixed, m + 1, 0, tiers, sizes, &run, &lease);
  size_t right = 0;
  for (size_t i = 0; i < m; i++) right += sizes[i] == old_lengths[i] && tiers[i] != STRATA_TIER_ABSENT;
  check(rc == 0 && run == m && lease == 0 && right == m && sizes[m] == 0 && tiers[m] == STRATA_TIER_ABSENT,
        "lookup_leased: every present block's length, 0 for a missing one, no lease when none was asked");
  if (right != m) fprintf(stderr, "  %zu of %zu sizes right\n", right, m);
  rc = strata_lookup_leased(client, keys, XBLOCKS, 0, NULL, sizes, &run, NULL);
  right = 0;
  for (size_t i = 0; i < XBLOCKS; i++) right += sizes[i] == lengths[i];
  check(rc == 0 && run == XBLOCKS && right == XBLOCKS, "lookup_leased: sizes of the gathered blocks");

  /* A lease: granted for the leading run, named by the read that follows (which releases it). */
  rc = strata_lookup_leased(client, keys, XBLOCKS, 30000, tiers, NULL, &run, &lease);
  check(rc == 0 && run == XBLOCKS && lease != 0, "lookup_leased: a lease is granted for the leading run");
  memset(pool, 0, pool_bytes);
  rc = strata_getv(client, keys, XBLOCKS, lease, segments, counts, NULL, got);
  same = 0;
  for (size_t i = 0; i < XBLOCKS; i++)
    same += got[i] == (int64_t)lengths[i] && memcmp(pool + offsets[i][0], contiguous + i * 3 * 65536, 64) == 0;
  check(rc == 0 && same == XBLOCKS, "getv: a read naming the lease returns every leased block");
  uint8_t *many = calloc(5000, STRATA_KEY_BYTES);
  check(strata_lookup_leased(client, many, 5000, 1000, NULL, NULL, NULL, NULL) == STRATA_E_INVALID_ARGUMENT,
        "lookup_leased: a lease over more than one batch is 1");
  free(many);

  /* Submissions: the descriptor is quiet with nothing submitted. */
  int fd = -1;
  check(strata_completion_fd(client, &fd) == 0 && fd >= 0, "completion_fd: a descriptor");
  check((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0, "completion_fd: close-on-exec (a forking host does not pass it on)");
  size_t polled = 7;
  strata_completion completions[SUBMITTERS * PER_SUBMITTER + 8];
  check(strata_poll_completions(client, completions, 8, &polled) == 0 && polled == 0 && !fd_readable(fd, 0),
        "poll_completions: nothing ready, the descriptor is not readable");

  /* A put, a lookup and a delete submitted together, drained through the descriptor. */
  uint8_t *sub_keys = keys + XBLOCKS * STRATA_KEY_BYTES; /* SUBMITTERS x PER_SUBMITTER fresh keys */
  size_t ns = SUBMITTERS * PER_SUBMITTER;
  uint8_t **sub_blocks = malloc(ns * sizeof *sub_blocks);
  uint64_t *sub_lengths = malloc(ns * sizeof *sub_lengths);
  strata_segment *sub_segments = malloc(ns * sizeof *sub_segments);
  size_t *ones = malloc(ns * sizeof *ones);
  for (size_t i = 0; i < ns; i++) {
    sub_lengths[i] = 1000 + mix(nonce + i) % 100000;
    sub_blocks[i] = malloc(sub_lengths[i]);
    fill(sub_blocks[i], sub_lengths[i], nonce ^ 77, i);
    sub_segments[i] = (strata_segment){sub_blocks[i], sub_lengths[i]};
    ones[i] = 1;
  }
  uint8_t *sub_outcomes = malloc(ns);
  uint64_t put_ticket = 0, lookup_ticket = 0, delete_ticket = 0, bad_ticket = 5;
  rc = strata_submit_put(client, sub_keys, ns, sub_segments, ones, sub_outcomes, &put_ticket);
  check(rc == 0 && put_ticket != 0, "submit_put: a ticket");
  check(drain(client, fd, completions, 1) == 1 && completions[0].ticket == put_ticket && completions[0].status == 0 &&
            completions[0].operation == STRATA_OP_PUT,
        "poll_completions: the put's completion");
  stored = 0;
  for (size_t i = 0; i < ns; i++) stored += sub_outcomes[i] == STRATA_PUT_STORED;
  check(stored == ns, "submit_put: every block stored");
  check(!fd_readable(fd, 0), "poll_completions: drained, the descriptor is quiet again");
  check(strata_submit_get(client, NULL, 1, 0, sub_segments, ones, NULL, got, &bad_ticket) == STRATA_E_INVALID_ARGUMENT &&
            bad_ticket == 0,
        "submit_get: a bad argument is returned at once and gives no ticket");

  /* Four threads submit one GET per block each (48 tickets in flight); this thread drains. */
  pthread_t threads[SUBMITTERS];
  struct submitter submitters[SUBMITTERS];
  for (int t = 0; t < SUBMITTERS; t++) {
    submitters[t] = (struct submitter){.client = client, .keys = sub_keys, .lengths = sub_lengths,
                                       .blocks = sub_blocks, .first = (size_t)t * PER_SUBMITTER};
    pthread_create(&threads[t], NULL, submit_share, &submitters[t]);
  }
  for (int t = 0; t < SUBMITTERS; t++) pthread_join(threads[t], NULL);
  size_t arrived = drain(client, fd, completions, ns);
  int all_submitted = 1, all_once = 1, all_ok = 1;
  for (int t = 0; t < SUBMITTERS; t++) {
    all_submitted &= submitters[t].ok;
    for (int k = 0; k < PER_SUBMITTER; k++) {
      int seen = 0;
      for (size_t c = 0; c < arrived; c++)
        if (completions[c].ticket == submitters[t].tickets[k]) {
          seen++;
          all_ok &= completions[c].status == 0 && completions[c].operation == STRATA_OP_GET;
        }
      all_once &= seen == 1;
      size_t i = submitters[t].first + (size_t)k;
      all_ok &= submitters[t].read[k] == (int64_t)sub_lengths[i] &&
                memcmp(submitters[t].copies[k], sub_blocks[i], sub_lengths[i]) == 0;
      free(submitters[t].copies[k]);
    }
  }
  check(all_submitted && arrived == ns, "submit_get: 48 tickets from 4 threads all complete");
  check(all_once, "poll_completions: each ticket is delivered exactly once");
  check(all_ok, "submit_get: every block read through a ticket matches byte for byte");

  uint8_t *sub_tiers = malloc(ns);
  uint64_t *sub_sizes = malloc(ns * sizeof *sub_sizes);
  rc = strata_submit_lookup(client, sub_keys, ns, 0, sub_tiers, sub_sizes, &lookup_ticket);
  uint8_t *sub_removed = malloc(ns);
  int rc2 = strata_submit_delete(client, sub_keys + (ns - 1) * STRATA_KEY_BYTES, 1, sub_removed, &delete_ticket);
  size_t two_done = drain(client, fd, completions, 2);
  int lookup_ok = 0, delete_ok = 0;
  for (size_t c = 0; c < two_done; c++) {
    if (completions[c].ticket == lookup_ticket && completions[c].status == 0 &&
        completions[c].operation == STRATA_OP_LOOKUP) {
      right = 0;
      for (size_t i = 0; i < ns; i++) right += sub_sizes[i] == sub_lengths[i];
      /* The delete may land before or after the lookup. */
      lookup_ok = right >= ns - 1 && completions[c].leading_run >= ns - 1;
    }
    if (completions[c].ticket == delete_ticket && completions[c].status == 0 &&
        completions[c].operation == STRATA_OP_DELETE)
      delete_ok = sub_removed[0] == 1;
  }
  check(rc == 0 && lookup_ok, "submit_lookup: tiers, sizes and the leading run");
  check(rc2 == 0 && delete_ok, "submit_delete: the block is removed");

  check(strata_unregister(client, pool) == 0, "unregister: the pool");
  check(strata_unregister(client, pool) == STRATA_E_NOT_FOUND, "unregister: twice is 3");

  for (size_t i = 0; i < ns; i++) free(sub_blocks[i]);
  free(sub_blocks);
  free(sub_lengths);
  free(sub_segments);
  free(ones);
  free(sub_outcomes);
  free(sub_tiers);
  free(sub_sizes);
  free(sub_removed);
  free(mixed);
  free(sizes);
  free(tiers);
  free(pool);
  free(contiguous);
  free(keys);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s HOST:PORT [BLOCKS [SEED [CA_FILE OTHER_CA_FILE]]]\n", argv[0]);
    return 2;
  }
  const char *node = argv[1];
  size_t n = argc > 2 ? (size_t)strtoull(argv[2], NULL, 10) : 300;
  uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 20240607;
  /* With CA_FILE the node speaks TLS: every connection verifies it; OTHER_CA_FILE did not sign it. */
  const char *ca_file = argc > 5 ? argv[4] : NULL;
  const char *other_ca_file = argc > 5 ? argv[5] : NULL;
  if (n < 8) {
    fprintf(stderr, "BLOCKS must be at least 8\n");
    return 2;
  }

  check_hash_vector();

  /* Argument validation needs no node. */
  strata_client *client = (strata_client *)1;
  check(strata_client_open(NULL, NULL, 0, 0, &client) == STRATA_E_INVALID_ARGUMENT && client == NULL,
        "open: NULL host_port returns 1 and sets *out to NULL");
  check(strata_client_open("no-port", NULL, 0, 0, &client) == STRATA_E_INVALID_ARGUMENT, "open: a bad address returns 1");
  check(strata_client_open(node, NULL, -1, 0, &client) == STRATA_E_INVALID_ARGUMENT, "open: negative connections returns 1");
  check(strata_client_open(node, NULL, 0, 0, NULL) == STRATA_E_INVALID_ARGUMENT, "open: NULL out returns 1");
  check(strata_lookup(NULL, NULL, 0, NULL, NULL) == STRATA_E_INVALID_ARGUMENT &&
            strstr(strata_last_error(), "client is NULL") != NULL,
        "lookup: a NULL client returns 1 with a message");
  check(strata_client_open("127.0.0.1:1", NULL, 1, 2000, &client) == STRATA_E_UNAVAILABLE,
        "open: nothing listening returns 9 (unavailable)");
  strata_client_close(NULL);

  if (ca_file != NULL) {
    client = (strata_client *)1;
    check(strata_client_open_tls(node, NULL, 1, 5000, "/nonexistent/ca.pem", NULL, NULL, &client) ==
                  STRATA_E_INVALID_CONFIGURATION &&
              client == NULL && strstr(strata_last_error(), "/nonexistent/ca.pem") != NULL,
          "open_tls: an unreadable CA file returns 2 naming it");
    check(strata_client_open_tls(node, NULL, 1, 5000, ca_file, ca_file, NULL, &client) == STRATA_E_INVALID_ARGUMENT,
          "open_tls: a certificate without its key returns 1");
    check(strata_client_open_tls(node, NULL, 1, 5000, other_ca_file, NULL, NULL, &client) ==
                  STRATA_E_PERMISSION_DENIED &&
              strstr(strata_last_error(), "certificate verification failed") != NULL,
          "open_tls: a node whose certificate another CA signed is refused (11), saying why");
    check(strata_client_open(node, NULL, 1, 5000, &client) == STRATA_E_PERMISSION_DENIED &&
              strstr(strata_last_error(), "this port requires TLS") != NULL,
          "open: plaintext to the TLS port is refused (11), saying so");
    check(strata_client_open_options(node, NULL, 1, 5000, 1, 0, NULL, ca_file, ca_file, &client) ==
                  STRATA_E_INVALID_ARGUMENT &&
              strstr(strata_last_error(), "need ca_file") != NULL,
          "open_options: a client certificate without ca_file returns 1");
    check(strata_client_open_options(node, NULL, 1, 5000, 1, 0, other_ca_file, NULL, NULL, &client) ==
              STRATA_E_PERMISSION_DENIED,
          "open_options: TLS is checked before any same-host move (another CA: 11)");
    check(strata_client_open_options(node, NULL, 1, 5000, 0, 0, ca_file, NULL, NULL, &client) == 0 && client != NULL,
          "open_options: TLS over TCP with same_host 0 connects");
    strata_client_close(client);
  }
  client = NULL;
  int rc = ca_file != NULL ? strata_client_open_tls(node, NULL, 4, 30000, ca_file, NULL, NULL, &client)
                           : strata_client_open(node, NULL, 4, 30000, &client);
  check(rc == 0 && client != NULL, "open: connects and says HELLO");
  if (rc != 0) {
    fprintf(stderr, "cannot open %s: %d %s\n", node, rc, strata_last_error());
    printf("c-abi: %d passed, %d failed\n", passed, failed);
    return 1;
  }

  /* Keys: one prompt of n blocks (so its blocks form a prefix), salted with a nonce so that runs
   * against the same node do not meet each other's blocks. */
  uint64_t nonce = mix((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32));
  size_t token_count = n * 16;
  uint32_t *tokens = malloc(token_count * sizeof *tokens);
  for (size_t i = 0; i < token_count; i++) tokens[i] = (uint32_t)(mix(seed + i) % 128000);
  uint8_t *keys = malloc((n + 1) * STRATA_KEY_BYTES);
  size_t key_count = 0;
  check(strata_hash_prefix("model=c-abi-test,dtype=bf16,block=16,tp=0/1,layers=0-1", (const uint8_t *)&nonce,
                           sizeof nonce, tokens, token_count, keys, n, &key_count) == 0 &&
            key_count == n,
        "hash_prefix: keys of the test prompt");
  uint8_t *missing = keys + n * STRATA_KEY_BYTES; /* a key nobody wrote */
  for (int i = 0; i < STRATA_KEY_BYTES; i++) missing[i] = (uint8_t)mix(nonce + 1000 + i);

  /* Sizes from 1 KiB to 2 MiB, spread evenly on a log scale, some odd. */
  uint64_t *lengths = malloc(n * sizeof *lengths);
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t r = mix(seed * 31 + i), octave = 1024ull << (r % 11); /* 1 KiB .. 1 MiB */
    uint64_t length = octave + (r >> 8) % octave;
    if (i % 3 == 1) length += mix(i) % 7;
    if (i == 0 || length < 1024) length = 1024;
    if (i == 1 || length > (2u << 20)) length = 2u << 20;
    lengths[i] = length;
    total += length;
  }

  /* Before any write: nothing is there. */
  uint8_t *tiers = malloc(n + 1);
  size_t run = 99;
  check(strata_lookup(client, keys, n, tiers, &run) == 0 && run == 0 && tiers[0] == STRATA_TIER_ABSENT,
        "lookup: nothing is there before the writes");
  check(strata_lookup(client, keys, 0, NULL, &run) == 0 && run == 0, "lookup: zero keys");

  /* Write every block in one call (the client splits it into parallel batches). */
  uint8_t **blocks = malloc(n * sizeof *blocks);
  for (size_t i = 0; i < n; i++) {
    blocks[i] = malloc(lengths[i]);
    fill(blocks[i], lengths[i], seed, i);
  }
  uint8_t *outcomes = malloc(n);
  memset(outcomes, 0xFF, n);
  rc = strata_put(client, keys, n, (const void *const *)blocks, lengths, outcomes);
  size_t stored = 0;
  for (size_t i = 0; i < n; i++) stored += outcomes[i] == STRATA_PUT_STORED;
  check(rc == 0 && stored == n, "put: every block is stored");
  if (stored != n) fprintf(stderr, "  %zu of %zu stored (%" PRIu64 " bytes in all)\n", stored, n, total);
  rc = strata_put(client, keys, 3, (const void *const *)blocks, lengths, outcomes);
  check(rc == 0 && outcomes[0] == STRATA_PUT_ALREADY_PRESENT && outcomes[2] == STRATA_PUT_ALREADY_PRESENT,
        "put: writing a key again reports already present");
  check(strata_put(client, keys, 2, NULL, lengths, outcomes) == STRATA_E_INVALID_ARGUMENT, "put: NULL sources returns 1");

  /* Lookup: the whole prompt is there; a gap ends the leading run. */
  run = 0;
  rc = strata_lookup(client, keys, n, tiers, &run);
  size_t present = 0;
  for (size_t i = 0; i < n; i++) present += tiers[i] == STRATA_TIER_RAM || tiers[i] == STRATA_TIER_NVME;
  check(rc == 0 && run == n && present == n, "lookup: the leading run is every block");
  uint8_t gapped[4 * STRATA_KEY_BYTES];
  memcpy(gapped, keys, 2 * STRATA_KEY_BYTES);
  memcpy(gapped + 2 * STRATA_KEY_BYTES, missing, STRATA_KEY_BYTES);
  memcpy(gapped + 3 * STRATA_KEY_BYTES, keys + 3 * STRATA_KEY_BYTES, STRATA_KEY_BYTES);
  rc = strata_lookup(client, gapped, 4, tiers, &run);
  check(rc == 0 && run == 2 && tiers[2] == STRATA_TIER_ABSENT && tiers[3] != STRATA_TIER_ABSENT,
        "lookup: a missing key ends the leading run");

  /* Read everything back in one call into fresh buffers (some larger than the block) and compare. */
  uint8_t **copies = malloc(n * sizeof *copies);
  uint64_t *capacities = malloc(n * sizeof *capacities);
  int64_t *read = malloc(n * sizeof *read);
  for (size_t i = 0; i < n; i++) {
    capacities[i] = lengths[i] + (i % 4 == 0 ? 4096 : 0);
    copies[i] = malloc(capacities[i]);
    memset(copies[i], 0xA5, capacities[i]);
    read[i] = -100;
  }
  rc = strata_get(client, keys, n, (void *const *)copies, capacities, read);
  check(rc == 0, "get: every block in one call");
#ifdef C_ABI_TEST_FLIP_A_BYTE /* proves the comparison below can fail (see Tests/CABITests) */
  copies[n / 2][lengths[n / 2] / 2] ^= 1;
#endif
  size_t same = 0;
  for (size_t i = 0; i < n; i++) {
    if (read[i] == (int64_t)lengths[i] && memcmp(copies[i], blocks[i], lengths[i]) == 0) {
      same++;
    } else if (failed < 20) {
      fprintf(stderr, "  block %zu: read %" PRId64 " of %" PRIu64 " bytes, content %s\n", i, read[i], lengths[i],
              read[i] == (int64_t)lengths[i] ? "differs" : "not compared");
    }
  }
  check(same == n, "get: every byte of every block matches what was written");

  /* Several threads read through the one client at once. */
  enum { THREADS = 4 };
  pthread_t threads[THREADS];
  struct reader readers[THREADS];
  for (int t = 0; t < THREADS; t++) {
    size_t share = n / THREADS;
    readers[t] = (struct reader){client, keys, lengths, t * share, t == THREADS - 1 ? n - t * share : share, seed, 0, 0};
    pthread_create(&threads[t], NULL, read_share, &readers[t]);
  }
  strata_hash_prefix("not a layout", NULL, 0, NULL, 0, NULL, 0, &key_count); /* this thread's own message */
  for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
  int threads_ok = 1, thread_errors_ok = 1;
  for (int t = 0; t < THREADS; t++) {
    threads_ok &= readers[t].ok;
    thread_errors_ok &= readers[t].thread_error_ok;
  }
  check(threads_ok, "get: threads sharing the client read every byte right");
  check(thread_errors_ok && strstr(strata_last_error(), "not NAME=VALUE") != NULL,
        "last_error: each thread keeps its own message");

  /* A missing key, a destination too small (left untouched), a zero-length NULL destination. */
  uint8_t multi_keys[3 * STRATA_KEY_BYTES];
  memcpy(multi_keys, missing, STRATA_KEY_BYTES);
  memcpy(multi_keys + STRATA_KEY_BYTES, keys + STRATA_KEY_BYTES, STRATA_KEY_BYTES); /* the 2 MiB block */
  memcpy(multi_keys + 2 * STRATA_KEY_BYTES, keys, STRATA_KEY_BYTES);
  uint64_t small_capacity = lengths[1] - 1;
  uint8_t *small = malloc(small_capacity);
  memset(small, 0x5A, small_capacity);
  uint8_t spare[64];
  void *multi_destinations[3] = {spare, small, NULL};
  uint64_t multi_capacities[3] = {sizeof spare, small_capacity, 0};
  int64_t multi_read[3] = {0, 0, 0};
  rc = strata_get(client, multi_keys, 3, multi_destinations, multi_capacities, multi_read);
  check(rc == 0 && multi_read[0] == STRATA_GET_MISSING, "get: a missing key reads -1");
  int untouched = 1;
  for (uint64_t i = 0; i < small_capacity; i++) untouched &= small[i] == 0x5A;
  check(rc == 0 && multi_read[1] == STRATA_GET_DESTINATION_TOO_SMALL && untouched,
        "get: a destination one byte too small reads -3 and is left untouched");
  check(rc == 0 && multi_read[2] == STRATA_GET_DESTINATION_TOO_SMALL, "get: a NULL destination of 0 bytes reads -3");
  check(strata_get(client, multi_keys, 1, multi_destinations, NULL, multi_read) == STRATA_E_INVALID_ARGUMENT,
        "get: NULL capacities returns 1");
  void *null_destination[1] = {NULL};
  check(strata_get(client, multi_keys, 1, null_destination, multi_capacities, multi_read) == STRATA_E_INVALID_ARGUMENT &&
            strstr(strata_last_error(), "destinations[0]") != NULL,
        "get: a NULL destination with a capacity returns 1 and names it");

  /* Delete the last block and a key that was never there. */
  uint8_t delete_keys[2 * STRATA_KEY_BYTES];
  memcpy(delete_keys, keys + (n - 1) * STRATA_KEY_BYTES, STRATA_KEY_BYTES);
  memcpy(delete_keys + STRATA_KEY_BYTES, missing, STRATA_KEY_BYTES);
  uint8_t removed[2] = {9, 9};
  rc = strata_delete(client, delete_keys, 2, removed);
  check(rc == 0 && removed[0] == 1 && removed[1] == 0, "delete: removes a present block, reports a missing one");
  rc = strata_lookup(client, keys, n, tiers, &run);
  check(rc == 0 && run == n - 1 && tiers[n - 1] == STRATA_TIER_ABSENT, "delete: the block is gone from lookup");
  int64_t deleted_read = 0;
  void *last_copy[1] = {copies[n - 1]};
  rc = strata_get(client, keys + (n - 1) * STRATA_KEY_BYTES, 1, last_copy, &capacities[n - 1], &deleted_read);
  check(rc == 0 && deleted_read == STRATA_GET_MISSING, "delete: reading the block reports it missing");

  /* Stat: a short buffer returns 1 and the length needed; then the whole JSON. */
  char tiny[8];
  size_t json_length = 0;
  rc = strata_stat(client, tiny, sizeof tiny, &json_length);
  check(rc == STRATA_E_INVALID_ARGUMENT && json_length > sizeof tiny && strlen(tiny) == sizeof tiny - 1,
        "stat: a short buffer returns 1 with the length needed");
  char *json = malloc(json_length + 64);
  size_t json_length2 = 0;
  rc = strata_stat(client, json, json_length + 64, &json_length2);
  check(rc == 0 && json_length2 > 2 && strlen(json) == json_length2 && json[0] == '{' && json[json_length2 - 1] == '}',
        "stat: the node's counters as a JSON object");

  check_extended(client, nonce, keys, lengths, n - 1, missing);

  strata_client_close(client);

  for (size_t i = 0; i < n; i++) {
    free(blocks[i]);
    free(copies[i]);
  }
  free(blocks);
  free(copies);
  free(capacities);
  free(read);
  free(small);
  free(json);
  free(outcomes);
  free(tiers);
  free(lengths);
  free(keys);
  free(tokens);

  printf("c-abi: %d passed, %d failed (%zu blocks, %" PRIu64 " bytes)\n", passed, failed, n, total);
  return failed == 0 ? 0 : 1;
}
