// GNU-only libc names for Swift (O_DIRECT, fallocate, MAP_POPULATE, madvise hints).
// _GNU_SOURCE is defined only inside strata_linux.c, never in this public header.
#ifndef STRATA_CSTRATALINUX_H
#define STRATA_CSTRATALINUX_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// The open(2) flag that bypasses the page cache (0 where the platform has none).
int strata_o_direct(void);

/// open(2) with O_DIRECT added to `flags`; returns the descriptor or -1 with errno set.
int strata_open_direct(const char *path, int flags, mode_t mode);

/// fallocate(2); returns 0 or -1 with errno set (ENOSYS where the platform has none).
int strata_fallocate(int fd, int mode, int64_t offset, int64_t length);

/// Flag for strata_fallocate that reserves space without changing the file size.
int strata_falloc_fl_keep_size(void);

/// Flag pair for strata_fallocate that frees a range (punch hole, keep size).
int strata_falloc_fl_punch_hole(void);

/// mmap(2) flag that pre-faults the mapping (0 where the platform has none).
int strata_map_populate(void);

/// madvise(2) advice asking for transparent huge pages (-1 where the platform has none).
int strata_madv_hugepage(void);

/// madvise(2) advice that faults a range in for writing (Linux 5.14; -1 where the headers have
/// none). An older kernel answers EINVAL.
int strata_madv_populate_write(void);

/// mlock2(2) with MLOCK_ONFAULT: locks the range's pages as they are faulted in, checking the
/// locked-memory limit at once without faulting anything. 0, or -1 with errno set (ENOSYS where
/// the platform has no mlock2).
int strata_mlock_on_fault(void *address, size_t length);

/// The logical block size that O_DIRECT I/O on `fd` must be aligned to (512 if unknown).
int strata_direct_io_alignment(int fd);

// Every descriptor below is created close-on-exec in the same call (never by a later fcntl), so a
// process that forks and execs on another thread meanwhile (an inference engine starting its
// workers, a test starting a node) cannot pass it on to its child.

/// accept4(2) with SOCK_CLOEXEC, and SOCK_NONBLOCK when `nonblocking` is not 0; returns the
/// descriptor or -1 with errno set.
int strata_accept(int fd, void *address, unsigned int *length, int nonblocking);

/// pipe2(2) with O_CLOEXEC (read end in ends[0], write end in ends[1]); 0 or -1 with errno set.
int strata_pipe(int ends[2]);

/// A non-blocking wake-up descriptor readable while signalled: an eventfd on Linux (ends[0] ==
/// ends[1]), a pipe elsewhere (read end in ends[0]); 0 or -1 with errno set.
int strata_event_create(int ends[2]);

/// Makes the event's read end readable (`write_end` is ends[1] of strata_event_create).
void strata_event_signal(int write_end);

/// Makes the event's read end unreadable again (`read_end` is ends[0]).
void strata_event_reset(int read_end);

// A readiness poller (epoll on Linux) through plain ints: Swift cannot lay out the packed
// `struct epoll_event` of x86-64, so it never sees one.

/// A new poller descriptor (close-on-exec), or -1 with errno set.
int strata_poller_create(void);

/// Watches `fd` for input and hang-up; returns 0 or -1 with errno set.
int strata_poller_add(int poller, int fd);

/// Stops watching `fd`; returns 0 or -1 with errno set.
int strata_poller_remove(int poller, int fd);

/// Waits up to `timeout_ms` (-1: no limit) and writes at most `capacity` ready descriptors to
/// `ready`; returns how many, or -1 with errno set.
int strata_poller_wait(int poller, int *ready, int capacity, int timeout_ms);

// The same-host path (docs/protocol.md, "Same-host path"): a client's memfd region, sealed so it
// cannot shrink under a node that maps it, passed over a Unix-domain socket with SCM_RIGHTS.

/// memfd_create(2) with MFD_CLOEXEC | MFD_ALLOW_SEALING; the descriptor or -1 with errno set.
int strata_memfd_create(const char *name);

/// The F_SEAL_* flags (0 where the platform has none).
int strata_seal_shrink(void);
int strata_seal_grow(void);
int strata_seal_seal(void);

/// fcntl(F_ADD_SEALS) and fcntl(F_GET_SEALS); -1 with errno set on failure (EINVAL: not sealable).
int strata_add_seals(int fd, int seals);
int strata_get_seals(int fd);

/// 1 when `fd` lives on hugetlbfs (whose pages can run out under a mapping: SIGBUS), 0 when not,
/// -1 with errno set.
int strata_is_hugetlb(int fd);

/// The longest Unix-domain socket path (sun_path less its terminator).
int strata_unix_path_max(void);

/// A listening Unix-domain stream socket at `path` with permissions `mode` (a stale socket file is
/// replaced); the descriptor or -1 with errno set (ENAMETOOLONG for a path that does not fit).
int strata_unix_listen(const char *path, int backlog, unsigned int mode);

/// A connected Unix-domain stream socket; the descriptor or -1 with errno set.
int strata_unix_connect(const char *path);

/// A Unix-domain datagram socket (close-on-exec), bound to `path` when it is not NULL; a path that
/// starts with '@' names an address in the abstract namespace (as systemd's NOTIFY_SOCKET may).
/// -1 with errno set on failure.
int strata_unix_datagram_open(const char *path);

/// Sends `count` bytes as one datagram from `fd` to `path` ('@': abstract, as above) without
/// waiting: a receiver whose queue is full gets nothing (EAGAIN). The bytes sent or -1 with errno.
long strata_unix_datagram_send(int fd, const char *path, const void *bytes, size_t count);

/// SO_PEERCRED: the connected peer's process and user ids; 0 or -1 with errno set.
int strata_peer_credentials(int fd, int *pid, unsigned int *uid);

/// sendmsg(2) of `length` bytes with `fd` attached as SCM_RIGHTS (none when `fd` < 0); the bytes
/// sent or -1 with errno set.
long strata_send_with_descriptor(int socket_fd, const void *data, size_t length, int fd);

/// recvmsg(2) of at most `length` bytes; `*fd` is the first descriptor attached (-1 if none; any
/// further ones are closed). -1 with errno set (EPROTO when descriptors were cut).
long strata_receive_with_descriptor(int socket_fd, void *data, size_t length, int *fd);

#endif
