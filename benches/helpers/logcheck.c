/* logcheck: the pipe consumer of PID 1's stdout. Reads stdin to EOF; every line is either a data
 * line ("<PREFIX><12-digit seq> @@LOGBENCH<payload>", exact length and content), a foreign line
 * (no marker: PID 1's own messages) or BROKEN (holds the marker but is not an exact data line).
 * Sequence numbers must be 0,1,2,...,N-1: gaps count as lost, repeats/backwards as disordered.
 * When seq N-1 arrives it prints one "DONE ..." line on stdout (flushed) and keeps draining; at
 * EOF it prints a "FINAL ..." line. Times are CLOCK_MONOTONIC seconds.
 * Usage: logcheck PREFIX N LINE_BYTES */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MARK "@@LOGBENCH"
#define BUF (1 << 20)

static double now(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static const char *prefix; static size_t plen, line, body;
static unsigned long long n, expect, data, lost, disorder, broken, foreign, bytes_total;
static double t_first, t_last; static int done;
static char *tmpl;

static void report(const char *what) {
    printf("%s data=%llu lost=%llu disorder=%llu broken=%llu foreign=%llu bytes=%llu t_first=%.6f t_last=%.6f\n",
           what, data, lost + (done ? 0 : (n > expect ? n - expect : 0)), disorder, broken, foreign,
           bytes_total, t_first, t_last);
    fflush(stdout);
}

static void one(const char *l, size_t len) {
    int is_data = 0;
    if (len == plen + body && memcmp(l, prefix, plen) == 0) {
        const char *d = l + plen; unsigned long long v = 0; int ok = 1;
        for (int j = 0; j < 12; j++) { if (d[j] < '0' || d[j] > '9') { ok = 0; break; } v = v * 10 + (d[j] - '0'); }
        if (ok && memcmp(d + 12, tmpl + 12, body - 12) == 0) {
            is_data = 1;
            if (!data) t_first = now();
            data++;
            if (v == expect) expect++;
            else if (v > expect) { lost += v - expect; expect = v + 1; }
            else disorder++;
            if (v + 1 == n && !done) { done = 1; t_last = now(); report("DONE"); }
        }
    }
    if (!is_data) {
        if (memmem(l, len, MARK, strlen(MARK))) broken++; else foreign++;
    }
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: logcheck PREFIX N LINE_BYTES\n"); return 2; }
    prefix = argv[1]; plen = strlen(prefix);
    n = strtoull(argv[2], 0, 10); line = strtoul(argv[3], 0, 10); body = line - 1;
    tmpl = malloc(line);
    memset(tmpl, '0', 12); tmpl[12] = ' '; memcpy(tmpl + 13, MARK, strlen(MARK));
    for (size_t k = 13 + strlen(MARK); k < line - 1; k++) tmpl[k] = 'a' + (k % 26);
    char *buf = malloc(2 * BUF + 65536); size_t have = 0;
    for (;;) {
        ssize_t r = read(0, buf + have, BUF);
        if (r < 0) { if (errno == EINTR) continue; break; }
        if (r == 0) break;
        bytes_total += (size_t)r; have += (size_t)r;
        char *p = buf, *end = buf + have, *nl;
        unsigned long long before = data;
        while ((nl = memchr(p, '\n', (size_t)(end - p)))) { one(p, (size_t)(nl - p)); p = nl + 1; }
        if (data != before) t_last = now();
        have = (size_t)(end - p);
        if (have > BUF) { one(p, have); have = 0; } /* absurdly long line: judge it as is */
        else memmove(buf, p, have);
    }
    if (have) one(buf, have); /* unterminated tail */
    report("FINAL");
    return 0;
}
