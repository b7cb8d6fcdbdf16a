/* launcher.c - fork N local ranks with a timeout (see launcher.h). */
#include "launcher.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static unsigned launch_counter;

int terse_launch_external(int *rank, int *size)
{
    /* the library's own order: TERSE_*, mpirun, PMI, Slurm, torchrun */
    static const char *pairs[][2] = {{"TERSE_RANK", "TERSE_SIZE"},
                                     {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
                                     {"PMI_RANK", "PMI_SIZE"},
                                     {"SLURM_PROCID", "SLURM_NTASKS"},
                                     {"RANK", "WORLD_SIZE"}};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        const char *r = getenv(pairs[i][0]), *s = getenv(pairs[i][1]);
        if (r && s) {
            *rank = atoi(r);
            *size = atoi(s);
            return 1;
        }
    }
    return 0;
}

/* A port free right now, below the kernel's ephemeral range (it starts at
 * 32768 here): outgoing connections and listeners on port 0 - a rank's
 * transport, a busy test - never take it between this check and the root's
 * bind moments later. */
static int free_port(unsigned id)
{
    for (unsigned k = 0; k < 64; k++) {
        int port = 10000 + (int)(((unsigned)getpid() * 7919u + id * 104729u + k * 131u) % 22000u);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                                .sin_port = htons((uint16_t)port)};
        int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        if (fd >= 0)
            close(fd);
        if (ok)
            return port;
    }
    return 0;
}

double terse_launch_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int terse_launch(int n, double timeout_sec, terse_rank_fn fn, void *arg, int *codes)
{
    terse_launch_ctx_t ctx;
    unsigned id = launch_counter++;
    int xr, xs;
    if (terse_launch_external(&xr, &xs)) {
        if (xs != n)
            return -1;
        /* Every rank runs the same sequence of cases, so `id` agrees. The
         * root address is left to the library: a port range derived from
         * the launcher's job id, whose busy ports the root skips. */
        ctx.rank = xr;
        ctx.size = xs;
        ctx.root[0] = 0;
        snprintf(ctx.secret, sizeof(ctx.secret), "mpi-case-%u", id);
        int rc = fn(&ctx, arg);
        if (codes) /* this process only knows its own outcome */
            for (int r = 0; r < n; r++)
                codes[r] = r == xr ? rc : 0;
        return rc != 0;
    }
    int port = free_port(id);
    snprintf(ctx.root, sizeof(ctx.root), "127.0.0.1:%d", port);
    snprintf(ctx.secret, sizeof(ctx.secret), "case-%d-%u-%d", (int)getpid(), id, port);
    ctx.size = n;
    pid_t *pids = calloc((size_t)n, sizeof(pid_t));
    int *st = calloc((size_t)n, sizeof(int));
    fflush(NULL);
    for (int r = 0; r < n; r++) {
        pid_t pid = fork();
        if (pid == 0) {
            ctx.rank = r;
            int rc = fn(&ctx, arg);
            fflush(NULL);
            _exit(rc & 0x7f);
        }
        pids[r] = pid;
        st[r] = -1;
    }
    double deadline = terse_launch_now() + timeout_sec;
    int left = n;
    while (left > 0) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            for (int r = 0; r < n; r++)
                if (pids[r] == pid) {
                    st[r] = WIFEXITED(status) ? WEXITSTATUS(status)
                                              : TERSE_LAUNCH_SIGNAL + WTERMSIG(status);
                    left--;
                }
            continue;
        }
        if (terse_launch_now() > deadline) {
            for (int r = 0; r < n; r++)
                if (st[r] < 0) {
                    fprintf(stderr, "launcher: rank %d still running after %.0f s: killed\n", r,
                            timeout_sec);
                    kill(pids[r], SIGKILL);
                    waitpid(pids[r], NULL, 0);
                    st[r] = TERSE_LAUNCH_TIMEOUT;
                    left--;
                }
            break;
        }
        usleep(2000);
    }
    int bad = 0;
    for (int r = 0; r < n; r++) {
        if (codes)
            codes[r] = st[r];
        bad |= st[r] != 0;
    }
    free(pids);
    free(st);
    return bad;
}
