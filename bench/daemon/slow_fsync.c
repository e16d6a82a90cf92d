/* A disk whose flushes are slow, for benchmarks: preloaded into the daemon
 * (LD_PRELOAD), it makes fsync() and fdatasync() sleep SLOW_FSYNC_MS
 * milliseconds (default 50) before doing the real thing, as an SD card or
 * a worn eMMC does. Whatever waits for a flush on the serving loop then
 * shows in the inference latency (bench/daemon/update_load_bench.cc). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void Delay(void) {
  const char* ms = getenv("SLOW_FSYNC_MS");
  const long n = ms ? atol(ms) : 50;
  struct timespec ts = {n / 1000, (n % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  Delay();
  return real(fd);
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  Delay();
  return real(fd);
}
