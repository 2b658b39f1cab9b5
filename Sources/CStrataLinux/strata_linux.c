// GNU-only libc entry points, compiled with _GNU_SOURCE so the rest of the project needs none.
#define _GNU_SOURCE
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
