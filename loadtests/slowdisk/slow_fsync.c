/* A slow disk for the k6 smoke (scripts/checks/65-loadtest-smoke.sh): preloaded into the
 * service (LD_PRELOAD), it makes every fsync and fdatasync wait SLOW_FSYNC_MS milliseconds
 * before flushing, as a busy cloud persistent disk does. SQLite flushes through these two
 * calls, so the broker's group commit and the store's commits all pay it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void wait_ms(void) {
    static long ms = -1;
    if (ms < 0) {
        const char *s = getenv("SLOW_FSYNC_MS");
        ms = s ? atol(s) : 0;
    }
    if (ms > 0) {
        struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&t, NULL);
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    wait_ms();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    wait_ms();
    return real(fd);
}
