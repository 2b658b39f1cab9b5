// GNU-only libc entry points, compiled with _GNU_SOURCE so the rest of the project needs none.
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/epoll.h>
#include "CStrataLinux.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/eventfd.h>
#endif
#if defined(__linux__)
#include <linux/fs.h>
#include <sys/ioctl.h>
#endif

int strata_o_direct(void) {
#ifdef O_DIRECT
  return O_DIRECT;
#else
  return 0;
#endif
}

int strata_open_direct(const char *path, int flags, mode_t mode) {
  return open(path, flags | strata_o_direct(), mode);
}

int strata_fallocate(int fd, int mode, int64_t offset, int64_t length) {
#if defined(__linux__)
  return fallocate(fd, mode, (off_t)offset, (off_t)length);
#else
  (void)fd; (void)mode; (void)offset; (void)length;
  errno = ENOSYS;
  return -1;
#endif
}

int strata_falloc_fl_keep_size(void) {
#ifdef FALLOC_FL_KEEP_SIZE
  return FALLOC_FL_KEEP_SIZE;
#else
  return 0;
#endif
}

int strata_falloc_fl_punch_hole(void) {
#if defined(FALLOC_FL_PUNCH_HOLE) && defined(FALLOC_FL_KEEP_SIZE)
  return FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
#else
  return 0;
#endif
}

int strata_map_populate(void) {
#ifdef MAP_POPULATE
  return MAP_POPULATE;
#else
  return 0;
#endif
}

int strata_madv_hugepage(void) {
#ifdef MADV_HUGEPAGE
  return MADV_HUGEPAGE;
#else
  return -1;
#endif
}

int strata_madv_populate_write(void) {
#ifdef MADV_POPULATE_WRITE
  return MADV_POPULATE_WRITE;
#elif defined(__linux__)
  return 23; /* linux/mman.h, 5.14 */
#else
  return -1;
#endif
}

int strata_mlock_on_fault(void *address, size_t length) {
#if defined(MLOCK_ONFAULT)
  return mlock2(address, length, MLOCK_ONFAULT);
#else
  (void)address;
  (void)length;
  errno = ENOSYS;
  return -1;
#endif
}

int strata_direct_io_alignment(int fd) {
#if defined(__linux__) && defined(BLKSSZGET)
  struct stat st;
  if (fstat(fd, &st) == 0) {
    if (S_ISBLK(st.st_mode)) {
      int size = 0;
      if (ioctl(fd, BLKSSZGET, &size) == 0 && size > 0) return size;
    } else if (st.st_blksize >= 512 && st.st_blksize <= 4096) {
      return (int)st.st_blksize;
    }
  }
#else
  (void)fd;
#endif
  return 512;
}

int strata_accept(int fd, void *address, unsigned int *length, int nonblocking) {
  socklen_t size = *length;
  int result = accept4(fd, (struct sockaddr *)address, &size, SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0));
  *length = size;
  return result;
}

int strata_pipe(int ends[2]) { return pipe2(ends, O_CLOEXEC); }

int strata_event_create(int ends[2]) {
#if defined(__linux__)
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return -1;
  ends[0] = fd;
  ends[1] = fd;
  return 0;
#else
  return pipe2(ends, O_CLOEXEC | O_NONBLOCK);
#endif
}

void strata_event_signal(int write_end) {
#if defined(__linux__)
  uint64_t one = 1;
  ssize_t written = write(write_end, &one, sizeof one);
#else
  uint8_t one = 1;
  ssize_t written = write(write_end, &one, sizeof one);
#endif
  (void)written;  // EAGAIN: already signalled past what the counter or pipe holds, still readable
}

void strata_event_reset(int read_end) {
  uint64_t scratch;
  while (read(read_end, &scratch, sizeof scratch) > 0) {
  }
}

int strata_poller_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int strata_poller_add(int poller, int fd) {
  struct epoll_event event = {.events = EPOLLIN | EPOLLRDHUP, .data = {.fd = fd}};
  return epoll_ctl(poller, EPOLL_CTL_ADD, fd, &event);
}

int strata_poller_remove(int poller, int fd) { return epoll_ctl(poller, EPOLL_CTL_DEL, fd, NULL); }

int strata_poller_wait(int poller, int *ready, int capacity, int timeout_ms) {
  struct epoll_event events[256];
  if (capacity > 256) capacity = 256;
  int count = epoll_wait(poller, events, capacity, timeout_ms);
  for (int i = 0; i < count; i++) ready[i] = events[i].data.fd;
  return count;
}

// MARK: The same-host path: memfd regions, seals, Unix-domain sockets, descriptor passing.

#include <string.h>
#include <sys/un.h>
#include <stddef.h>
#include <sys/vfs.h>
#include <unistd.h>
#if defined(__linux__)
#include <linux/magic.h>
#endif

int strata_memfd_create(const char *name) {
#if defined(__linux__) && defined(MFD_ALLOW_SEALING)
  return memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
#else
  (void)name;
  errno = ENOSYS;
  return -1;
#endif
}

int strata_seal_shrink(void) {
#ifdef F_SEAL_SHRINK
  return F_SEAL_SHRINK;
#else
  return 0;
#endif
}

int strata_seal_grow(void) {
#ifdef F_SEAL_GROW
  return F_SEAL_GROW;
#else
  return 0;
#endif
}

int strata_seal_seal(void) {
#ifdef F_SEAL_SEAL
  return F_SEAL_SEAL;
#else
  return 0;
#endif
}

int strata_add_seals(int fd, int seals) {
#ifdef F_ADD_SEALS
  return fcntl(fd, F_ADD_SEALS, seals);
#else
  (void)fd; (void)seals;
  errno = ENOSYS;
  return -1;
#endif
}

int strata_get_seals(int fd) {
#ifdef F_GET_SEALS
  return fcntl(fd, F_GET_SEALS);
#else
  (void)fd;
  errno = ENOSYS;
  return -1;
#endif
}

int strata_is_hugetlb(int fd) {
#if defined(__linux__) && defined(HUGETLBFS_MAGIC)
  struct statfs info;
  if (fstatfs(fd, &info) != 0) return -1;
  return info.f_type == HUGETLBFS_MAGIC ? 1 : 0;
#else
  (void)fd;
  return 0;
#endif
}

static int unix_address(const char *path, struct sockaddr_un *address) {
  memset(address, 0, sizeof(*address));
  address->sun_family = AF_UNIX;
  size_t length = strlen(path);
  if (length == 0 || length >= sizeof(address->sun_path)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(address->sun_path, path, length);
  return 0;
}

int strata_unix_path_max(void) { return (int)sizeof(((struct sockaddr_un *)0)->sun_path) - 1; }

int strata_unix_listen(const char *path, int backlog, unsigned int mode) {
  struct sockaddr_un address;
  if (unix_address(path, &address) != 0) return -1;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  // A socket file left by a node that stopped without removing it is replaced; anything else at
  // the path (a regular file, a directory) makes bind fail below.
  // A socket some process still listens on is in use, not stale.
  struct stat st;
  if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
    int probe = strata_unix_connect(path);
    if (probe >= 0) {
      close(probe);
      close(fd);
      errno = EADDRINUSE;
      return -1;
    }
    unlink(path);
  }
  if (bind(fd, (struct sockaddr *)&address, sizeof(address)) != 0 || chmod(path, (mode_t)mode) != 0 ||
      listen(fd, backlog) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

int strata_unix_connect(const char *path) {
  struct sockaddr_un address;
  if (unix_address(path, &address) != 0) return -1;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

/// `path` as an address: '@' first names the abstract namespace (a leading zero byte, not
/// terminated); the address length goes to `length`.
static int datagram_address(const char *path, struct sockaddr_un *address, socklen_t *length) {
  if (unix_address(path, address) != 0) return -1;
  size_t bytes = strlen(path);
  if (path[0] == '@') address->sun_path[0] = 0;
  *length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + bytes + (path[0] == '@' ? 0 : 1));
  return 0;
}

int strata_unix_datagram_open(const char *path) {
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || path == NULL) return fd;
  struct sockaddr_un address;
  socklen_t length;
  if (datagram_address(path, &address, &length) != 0 || bind(fd, (struct sockaddr *)&address, length) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

long strata_unix_datagram_send(int fd, const char *path, const void *bytes, size_t count) {
  struct sockaddr_un address;
  socklen_t length;
  if (datagram_address(path, &address, &length) != 0) return -1;
  return (long)sendto(fd, bytes, count, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&address, length);
}

int strata_peer_credentials(int fd, int *pid, unsigned int *uid) {
#if defined(SO_PEERCRED)
  struct ucred credentials;
  socklen_t length = sizeof(credentials);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return -1;
  *pid = credentials.pid;
  *uid = credentials.uid;
  return 0;
#else
  (void)fd; (void)pid; (void)uid;
  errno = ENOSYS;
  return -1;
#endif
}

long strata_send_with_descriptor(int socket_fd, const void *data, size_t length, int fd) {
  struct iovec vector = {.iov_base = (void *)data, .iov_len = length};
  union {
    char buffer[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof(control));
  struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1};
  if (fd >= 0) {
    message.msg_control = control.buffer;
    message.msg_controllen = sizeof(control.buffer);
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(header), &fd, sizeof(int));
  }
  ssize_t sent;
  do {
    sent = sendmsg(socket_fd, &message, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  return (long)sent;
}

long strata_receive_with_descriptor(int socket_fd, void *data, size_t length, int *fd) {
  *fd = -1;
  struct iovec vector = {.iov_base = data, .iov_len = length};
  // Room for a few descriptors: any beyond the first are closed, never kept.
  union {
    char buffer[CMSG_SPACE(4 * sizeof(int))];
    struct cmsghdr align;
  } control;
  struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1, .msg_control = control.buffer,
                           .msg_controllen = sizeof(control.buffer)};
  ssize_t received;
  do {
    received = recvmsg(socket_fd, &message, MSG_CMSG_CLOEXEC);
  } while (received < 0 && errno == EINTR);
  if (received < 0) return -1;
  for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL; header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t index = 0; index < count; index++) {
      int received_fd;
      memcpy(&received_fd, CMSG_DATA(header) + index * sizeof(int), sizeof(int));
      if (*fd < 0) {
        *fd = received_fd;
      } else {
        close(received_fd);
      }
    }
  }
  if (message.msg_flags & MSG_CTRUNC) {
    // Descriptors were cut: the message is refused whole.
    if (*fd >= 0) close(*fd);
    *fd = -1;
    errno = EPROTO;
    return -1;
  }
  return (long)received;
}
