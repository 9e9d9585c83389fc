/* orphans: stands in for redis-server. Forks a middle process that forks N grandchildren and
 * exits, so the N grandchildren are reparented to PID 1 (the init under test). Each grandchild
 * blocks on a pipe. Writes READY_FILE, waits for one byte on GO_FIFO, records CLOCK_MONOTONIC,
 * closes the pipe (all N exit at once: a burst of N orphan exits), writes the release time to
 * READY_FILE.t0, then sleeps forever (it stays the supervised child).
 * Usage: orphans N READY_FILE GO_FIFO */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void put(const char *path, const char *text) {
    char tmp[4096]; snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w"); if (!f) { perror(tmp); exit(1); }
    fputs(text, f); fclose(f); rename(tmp, path);
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: orphans N READY_FILE GO_FIFO\n"); return 2; }
    long n = atol(argv[1]);
    int p[2]; if (pipe(p)) { perror("pipe"); return 1; }
    pid_t mid = fork();
    if (mid < 0) { perror("fork"); return 1; }
    if (mid == 0) {
        long made = 0;
        for (long i = 0; i < n; i++) {
            pid_t g = fork();
            if (g < 0) { perror("fork grandchild"); break; }
            if (g == 0) {
                char c; close(p[1]);
                while (read(p[0], &c, 1) < 0) {}
                _exit(0);
            }
            made++;
        }
        _exit(made == n ? 0 : 1);
    }
    close(p[0]);
    int st = 0; waitpid(mid, &st, 0);
    char msg[64]; snprintf(msg, sizeof msg, "%d\n", WIFEXITED(st) && WEXITSTATUS(st) == 0);
    put(argv[2], msg);
    int go = open(argv[3], O_RDONLY); /* blocks until the benchmark opens it */
    char c; if (go >= 0) { (void)!read(go, &c, 1); close(go); }
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    close(p[1]);
    char t0[64]; snprintf(t0, sizeof t0, "%.6f\n", t.tv_sec + t.tv_nsec / 1e9);
    char path[4096]; snprintf(path, sizeof path, "%s.t0", argv[2]);
    put(path, t0);
    for (;;) pause();
}
