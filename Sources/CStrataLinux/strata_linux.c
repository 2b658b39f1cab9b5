// GNU-only libc entry points, compiled with _GNU_SOURCE so the rest of the project needs none.
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/epoll.h>
#include "CStrataLinux.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
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

int strata_accept_nonblocking(int fd, void *address, unsigned int *length) {
  socklen_t size = *length;
  int result = accept4(fd, (struct sockaddr *)address, &size, SOCK_NONBLOCK | SOCK_CLOEXEC);
  *length = size;
  return result;
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
