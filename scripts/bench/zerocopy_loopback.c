// Loopback TCP send throughput with and without MSG_ZEROCOPY (docs/performance.md): one thread
// sends BLOCK-byte buffers for SECONDS to a thread that receives them; prints GB/s received and
// the process's CPU seconds per GB (both threads). With zerocopy the sender keeps at most 64
// sends awaiting their completion notice (read from the socket's error queue), as a server
// reusing its buffers must.
//
//   gcc -O2 -pthread -o zerocopy_loopback scripts/bench/zerocopy_loopback.c
//   ./zerocopy_loopback BLOCK SECONDS 0|1
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif

enum { BUFFERS = 8, MAX_AWAITING = 64 };

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

struct receiver { int fd; long long bytes; };

static void *receive_all(void *argument) {
  struct receiver *receiver = argument;
  char *buffer = malloc(1 << 20);
  ssize_t n;
  while ((n = recv(receiver->fd, buffer, 1 << 20, 0)) > 0) receiver->bytes += n;
  free(buffer);
  return NULL;
}

// Zerocopy sends completed since the last call (each notice covers a range of sends).
static long completed_sends(int fd) {
  char control[128];
  long completed = 0;
  for (;;) {
    struct msghdr message = {.msg_control = control, .msg_controllen = sizeof control};
    if (recvmsg(fd, &message, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return completed;
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    if (!header) continue;
    struct sock_extended_err *notice = (struct sock_extended_err *)CMSG_DATA(header);
    completed += (long)notice->ee_data - notice->ee_info + 1;
  }
}

static void wait_for_notice(int fd) {
  struct pollfd p = {.fd = fd, .events = 0};
  poll(&p, 1, 10);  // the error queue reports as POLLERR
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s BLOCK SECONDS 0|1\n", argv[0]);
    return 2;
  }
  size_t block = strtoul(argv[1], NULL, 0);
  double seconds = atof(argv[2]);
  int zerocopy = atoi(argv[3]);

  int listener = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t length = sizeof address;
  if (bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 1) ||
      getsockname(listener, (struct sockaddr *)&address, &length)) {
    perror("listen");
    return 1;
  }
  int sender = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(sender, (struct sockaddr *)&address, sizeof address)) {
    perror("connect");
    return 1;
  }
  struct receiver receiver = {.fd = accept(listener, NULL, NULL)};
  int one = 1;
  if (zerocopy && setsockopt(sender, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof one)) {
    perror("SO_ZEROCOPY");
    return 1;
  }
  char *buffers[BUFFERS];
  for (int i = 0; i < BUFFERS; i++) {
    buffers[i] = aligned_alloc(4096, block);
    memset(buffers[i], i, block);
  }
  pthread_t thread;
  pthread_create(&thread, NULL, receive_all, &receiver);

  double cpu_before = cpu_seconds(), started = now();
  long sends = 0, completed = 0;
  for (int next = 0; now() - started < seconds; next = (next + 1) % BUFFERS) {
    for (size_t offset = 0; offset < block;) {
      ssize_t n = send(sender, buffers[next] + offset, block - offset, zerocopy ? MSG_ZEROCOPY : 0);
      if (n < 0 && errno == ENOBUFS) {  // too many pinned pages: wait for completions
        wait_for_notice(sender);
        completed += completed_sends(sender);
        continue;
      }
      if (n < 0) {
        perror("send");
        return 1;
      }
      offset += n;
      sends++;
    }
    if (!zerocopy) continue;
    completed += completed_sends(sender);
    while (sends - completed > MAX_AWAITING) {
      wait_for_notice(sender);
      completed += completed_sends(sender);
    }
  }
  double elapsed = now() - started;
  shutdown(sender, SHUT_WR);
  pthread_join(thread, NULL);
  double gigabytes = receiver.bytes / 1e9;
  printf("block %zu zerocopy %d: %.2f GB/s, process CPU %.3f s/GB\n", block, zerocopy, gigabytes / elapsed,
         (cpu_seconds() - cpu_before) / gigabytes);
  return 0;
}
