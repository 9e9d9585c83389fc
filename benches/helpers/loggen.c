/* loggen: writes N lines "<12-digit seq> @@LOGBENCH<payload>\n", each exactly LINE bytes, to
 * stdout in 64 KiB blocks of whole lines, then exits. Usage: loggen TOTAL_BYTES LINE_BYTES */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MARK "@@LOGBENCH"

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: loggen TOTAL_BYTES LINE_BYTES\n"); return 2; }
    unsigned long long total = strtoull(argv[1], 0, 10);
    size_t line = strtoul(argv[2], 0, 10);
    if (line < 32 || line > 4096) { fprintf(stderr, "LINE_BYTES in 32..4096\n"); return 2; }
    unsigned long long n = total / line;
    size_t per = 65536 / line;
    char *buf = malloc(per * line);
    /* template: digits(12) ' ' MARK payload... '\n' */
    for (size_t i = 0; i < per; i++) {
        char *l = buf + i * line;
        memset(l, '0', 12);
        l[12] = ' ';
        memcpy(l + 13, MARK, strlen(MARK));
        for (size_t k = 13 + strlen(MARK); k < line - 1; k++) l[k] = 'a' + (k % 26);
        l[line - 1] = '\n';
    }
    unsigned long long seq = 0;
    while (seq < n) {
        size_t k = 0;
        for (; k < per && seq < n; k++, seq++) {
            char *d = buf + k * line + 11;
            unsigned long long v = seq;
            for (int j = 0; j < 12; j++) { *d-- = '0' + v % 10; v /= 10; }
        }
        size_t len = k * line, off = 0;
        while (off < len) {
            ssize_t w = write(1, buf + off, len - off);
            if (w < 0) { if (errno == EINTR) continue; perror("loggen write"); return 1; }
            off += (size_t)w;
        }
    }
    return 0;
}
