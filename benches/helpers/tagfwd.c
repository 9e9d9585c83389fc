/* tagfwd: a minimal line-tagging log forwarder, the anchor of the tagged log-forwarding measurement
 * of benches/pid1.py (what a forwarder that prefixes every line with "[name] " can reach on this
 * machine, measured in the same run as redisha-init's tagged mode).
 *
 *   tagfwd [-r READ_BYTES] [-p PIPE_BYTES] [-v] [-o STDOUT_PIPE_BYTES] NAME CMD [NAME CMD ...]
 *
 * Starts each CMD with /bin/sh -c, its stdout and stderr on one pipe, and forwards every line of
 * it to our stdout as "[NAME] line\n". Lines are whole (a partial line waits for the next read; a
 * line longer than the read buffer is cut), and every write holds whole lines of one child only.
 * Default: the I/O of redisha-init's tagged mode (src/logs.rs), so the two differ only in the
 * code around it: reads of 48 KiB, child pipes grown to 1 MiB (F_SETPIPE_SZ), tag and line copied
 * into an output buffer written with one write() per read. Options measured on the way there:
 * -r the read size, -p the child pipe size (0: the kernel's 64 KiB), -v writev() of tag and line
 * as separate pieces instead of copying, -o grow our stdout pipe too (redisha-init does not: that
 * pipe belongs to the container runtime). Nothing else: no restarts, no signal forwarding,
 * children reaped by SIGCHLD=SIG_IGN. Exits when every child's pipe is at EOF. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAXC 8
#define NIOV 1024 /* IOV_MAX on Linux */

struct child {
    int fd;
    char tag[64];
    size_t taglen;
    char *buf;
    size_t have; /* bytes of an unfinished line at the start of buf */
};

static size_t rbytes = 48 << 10;
static int copy_mode = 1;
static char *out; /* copy mode */
static size_t outcap;

static void write_all(const char *p, size_t n) {
    while (n) {
        ssize_t w = write(1, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return; /* a closed stdout must not stop the draining */
        }
        p += w;
        n -= (size_t)w;
    }
}

static void writev_all(struct iovec *iov, int cnt) {
    while (cnt) {
        ssize_t w = writev(1, iov, cnt);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        while (cnt && (size_t)w >= iov->iov_len) { w -= (ssize_t)iov->iov_len; iov++; cnt--; }
        if (cnt) { iov->iov_base = (char *)iov->iov_base + w; iov->iov_len -= (size_t)w; }
    }
}

/* Forwards the complete lines of c->buf[0..len) and keeps the unfinished tail at the start. */
static void forward(struct child *c, size_t len, int eof) {
    static struct iovec iov[NIOV];
    int n = 0;
    size_t o = 0;
    char *p = c->buf, *end = c->buf + len;
    for (;;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l;
        if (nl) l = (size_t)(nl - p) + 1;
        else if (eof && p < end) l = (size_t)(end - p);
        else if (p == c->buf && len == rbytes) l = len; /* line longer than the buffer: cut */
        else break;
        if (copy_mode) {
            if (o + c->taglen + l + 1 > outcap) { write_all(out, o); o = 0; }
            memcpy(out + o, c->tag, c->taglen);
            memcpy(out + o + c->taglen, p, l);
            o += c->taglen + l;
            if (p[l - 1] != '\n') out[o++] = '\n';
        } else {
            iov[n].iov_base = c->tag; iov[n++].iov_len = c->taglen;
            iov[n].iov_base = p; iov[n++].iov_len = l;
            if (p[l - 1] != '\n') { iov[n].iov_base = "\n"; iov[n++].iov_len = 1; }
            if (n > NIOV - 3) { writev_all(iov, n); n = 0; }
        }
        p += l;
        if (p >= end) break;
    }
    if (copy_mode) { if (o) write_all(out, o); }
    else if (n) writev_all(iov, n);
    c->have = (size_t)(end - p);
    if (c->have) memmove(c->buf, p, c->have);
}

int main(int argc, char **argv) {
    long pipe_bytes = 1 << 20;
    int opt;
    long out_pipe = 0;
    while ((opt = getopt(argc, argv, "+r:p:vo:")) != -1) {
        if (opt == 'r') rbytes = strtoul(optarg, 0, 10);
        else if (opt == 'p') pipe_bytes = strtol(optarg, 0, 10);
        else if (opt == 'v') copy_mode = 0;
        else if (opt == 'o') out_pipe = strtol(optarg, 0, 10);
        else rbytes = 0; /* unknown option: usage */
    }
    if (rbytes < 4096 || argc - optind < 2 || (argc - optind) % 2 || (argc - optind) / 2 > MAXC) {
        fprintf(stderr, "usage: tagfwd [-r READ>=4096] [-p PIPE] [-v] [-o OUTPIPE] NAME CMD [NAME CMD ...]\n");
        return 2;
    }
    if (out_pipe > 0) fcntl(1, F_SETPIPE_SZ, (int)out_pipe);
    signal(SIGCHLD, SIG_IGN); /* PID 1: the kernel reaps our children */
    signal(SIGPIPE, SIG_IGN);
    outcap = rbytes + rbytes / 2 + 4096;
    out = malloc(outcap);
    struct child cs[MAXC];
    struct pollfd pf[MAXC];
    int nc = 0;
    for (int i = optind; i < argc; i += 2, nc++) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) { perror("pipe"); return 1; }
        if (pipe_bytes > 0) fcntl(p[0], F_SETPIPE_SZ, (int)pipe_bytes); /* best effort */
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 1; }
        if (pid == 0) {
            signal(SIGCHLD, SIG_DFL);
            signal(SIGPIPE, SIG_DFL);
            dup2(p[1], 1);
            dup2(p[1], 2);
            execl("/bin/sh", "sh", "-c", argv[i + 1], (char *)0);
            _exit(127);
        }
        close(p[1]);
        struct child *c = &cs[nc];
        c->fd = p[0];
        c->taglen = (size_t)snprintf(c->tag, sizeof c->tag, "[%s] ", argv[i]);
        c->buf = malloc(rbytes);
        c->have = 0;
        pf[nc].fd = p[0];
        pf[nc].events = POLLIN;
    }
    int open_fds = nc;
    while (open_fds) {
        if (poll(pf, (nfds_t)nc, -1) < 0) {
            if (errno == EINTR) continue;
            perror("poll");
            return 1;
        }
        for (int i = 0; i < nc; i++) {
            if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            struct child *c = &cs[i];
            ssize_t r = read(c->fd, c->buf + c->have, rbytes - c->have);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                forward(c, c->have, 1);
                close(c->fd);
                pf[i].fd = -1;
                open_fds--;
                continue;
            }
            forward(c, c->have + (size_t)r, 0);
        }
    }
    return 0;
}
