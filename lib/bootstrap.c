/* bootstrap.c - TCP rendezvous with per-job secret check (see bootstrap.h). */
#include "bootstrap.h"
#include "log.h"
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BOOT_MAGIC 0x5445424fu /* "TEBO" */
#define BOOT_VERSION 2
/* A root found among several ports answers a hello at once (it listens only
 * once its transport is open); a listener silent this long is not ours. */
#define BOOT_PROBE_ACK_SEC 3.0

typedef struct boot_hello {
    uint32_t magic, version;
    uint64_t secret_hash;
    int32_t rank, size;
    uint32_t bloblen, pad;
} boot_hello_t;

typedef struct boot_reply {
    uint32_t magic;
    int32_t status;
} boot_reply_t;

/* Root: listen on the first free port of the range. */
static terse_status_t root_listen(terse_boot_t *boot, const char *root_addr)
{
    /* Listen on every interface: a host name often resolves to a loopback
     * alias locally and to the real address elsewhere. */
    int first = ntohs(boot->root.sin_port), err = 0;
    for (int i = 0; i < boot->nports; i++) {
        struct sockaddr_in any = boot->root;
        any.sin_addr.s_addr = htonl(INADDR_ANY);
        any.sin_port = htons((uint16_t)(first + i));
        if (terse__net_listen(&any, &boot->lfd) == TERSE_OK) {
            boot->root.sin_port = any.sin_port;
            if (i > 0)
                TERSE_INFO(BOOT, "root: ports %d-%d busy, listening on %d", first, first + i - 1, first + i);
            return TERSE_OK;
        }
        err = errno;
    }
    if (boot->nports > 1)
        TERSE_WARN(BOOT, "rank 0 cannot listen on any of ports %d-%d of %s (%s): other programs hold "
                         "them; set TERSE_ROOT_ADDR=host:first-last", first, first + boot->nports - 1,
                   root_addr, strerror(err));
    else
        TERSE_WARN(BOOT, "rank 0 cannot listen on port %d of %s (%s): is another job using it? "
                         "set TERSE_ROOT_ADDR", first, root_addr, strerror(err));
    return TERSE_ERR_SYSTEM;
}

/* Non-root: one attempt at one port. Connects, sends hello and blob, and
 * waits for the root's answer. Returns TERSE_OK with *fd_out, NOT_HERE when
 * nothing that is this job's root answered there (nobody listening, a silent
 * or foreign listener, another job's root while probing a range), or the
 * root's refusal. */
#define NOT_HERE 1
static int try_root(terse_boot_t *boot, const struct sockaddr_in *addr, const void *blob, size_t len,
                    double deadline, int *fd_out)
{
    int probing = boot->nports > 1, fd;
    double now = terse__now();
    if (terse__net_connect_once(addr, now + 1.0 < deadline ? now + 1.0 : deadline, &fd))
        return NOT_HERE;
    boot_hello_t h = {BOOT_MAGIC, BOOT_VERSION, boot->secret_hash, boot->rank, boot->size,
                      (uint32_t)len, 0};
    boot_reply_t rep;
    double ack = probing && now + BOOT_PROBE_ACK_SEC < deadline ? now + BOOT_PROBE_ACK_SEC : deadline;
    if (terse__net_send_all(fd, &h, sizeof(h), ack) != TERSE_OK ||
        terse__net_send_all(fd, blob, len, ack) != TERSE_OK ||
        terse__net_recv_all(fd, &rep, sizeof(rep), ack) != TERSE_OK || rep.magic != BOOT_MAGIC ||
        (probing && rep.status == TERSE_ERR_AUTH)) {
        close(fd);
        return NOT_HERE;
    }
    if (rep.status != TERSE_OK) {
        close(fd);
        TERSE_WARN(BOOT, "rank %d: the root refused us: %s", boot->rank,
                   terse_strerror((terse_status_t)rep.status));
        return rep.status;
    }
    *fd_out = fd;
    return TERSE_OK;
}

/* Non-root: go round the ports until one answers as this job's root (it may
 * not listen yet, or - given a range - listen on another port). */
static terse_status_t find_root(terse_boot_t *boot, const void *blob, size_t len, double deadline)
{
    int first = ntohs(boot->root.sin_port);
    double backoff = 0.01;
    for (;;) {
        for (int i = 0; i < boot->nports; i++) {
            struct sockaddr_in a = boot->root;
            a.sin_port = htons((uint16_t)(first + i));
            int rc = try_root(boot, &a, blob, len, deadline, &boot->fd);
            if (rc == TERSE_OK) {
                boot->root = a;
                return TERSE_OK;
            }
            if (rc != NOT_HERE)
                return (terse_status_t)rc;
        }
        if (terse__now() + backoff >= deadline) {
            TERSE_WARN(BOOT, "rank %d cannot reach the root at %s: %s", boot->rank, boot->root_addr,
                       terse_strerror(TERSE_ERR_TIMEOUT));
            return TERSE_ERR_TIMEOUT;
        }
        usleep((useconds_t)(backoff * 1e6));
        if (backoff < 0.2)
            backoff *= 2;
    }
}

terse_status_t terse__boot_check_root(const char *root_addr, struct sockaddr_in *root, int *nports)
{
    struct sockaddr_in a;
    int n;
    terse_status_t st = terse__net_parse(root_addr, root ? root : &a, nports ? nports : &n);
    if (st != TERSE_OK)
        TERSE_WARN(BOOT, "invalid root address '%s' (want host:port or host:first-last, at most %d ports)",
                   root_addr, TERSE_NET_MAX_PORTS);
    return st;
}

terse_status_t terse__boot_open(terse_boot_t *boot, int rank, int size, const char *root_addr,
                                uint64_t secret_hash)
{
    memset(boot, 0, sizeof(*boot));
    boot->rank = rank;
    boot->size = size;
    boot->secret_hash = secret_hash;
    boot->fd = boot->lfd = -1;
    snprintf(boot->root_addr, sizeof(boot->root_addr), "%s", root_addr);
    terse_status_t st = terse__boot_check_root(root_addr, &boot->root, &boot->nports);
    if (st != TERSE_OK)
        return st;
    /* the local address that routes to the root (a UDP connect sends nothing) */
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in me;
    socklen_t len = sizeof(me);
    if (fd < 0 || connect(fd, (struct sockaddr *)&boot->root, sizeof(boot->root)) != 0 ||
        getsockname(fd, (struct sockaddr *)&me, &len) != 0) {
        TERSE_WARN(BOOT, "rank %d: no route to the root at %s: %s", rank, root_addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        return TERSE_ERR_SYSTEM;
    }
    close(fd);
    inet_ntop(AF_INET, &me.sin_addr, boot->local_ip, sizeof(boot->local_ip));
    return TERSE_OK;
}

/* Strays (scanners, other jobs) are counted: the first is a WARN, the rest
 * INFO, and the root sums them up once the rendezvous is over. */
#define STRAY(boot, ...)                           \
    do {                                           \
        if ((boot)->strays++ == 0)                 \
            TERSE_WARN(BOOT, __VA_ARGS__);         \
        else                                       \
            TERSE_INFO(BOOT, __VA_ARGS__);         \
    } while (0)

/* Root side: read one hello and its blob, check them, answer. Returns the
 * rank, or -1 if rejected. A real rank sends both at once, so a connection
 * silent for 2 s is a stray. */
static int root_check(terse_boot_t *boot, int fd, size_t len, char *all, int *fds, double deadline)
{
    boot_hello_t h;
    boot_reply_t rep = {BOOT_MAGIC, TERSE_OK};
    double hd = terse__now() + 2.0 < deadline ? terse__now() + 2.0 : deadline;
    if (terse__net_recv_all(fd, &h, sizeof(h), hd) != TERSE_OK || h.magic != BOOT_MAGIC) {
        STRAY(boot, "rejected a connection to the root that is not a terse rank");
        return -1;
    }
    if (h.version != BOOT_VERSION) {
        rep.status = TERSE_ERR_PROTOCOL;
        TERSE_WARN(BOOT, "rejected rank %d: bootstrap version %u, this root speaks %u (mixed terse builds)",
                   (int)h.rank, h.version, BOOT_VERSION);
    } else if (h.secret_hash != boot->secret_hash) {
        rep.status = TERSE_ERR_AUTH;
        STRAY(boot, "rejected rank %d: wrong job secret (another job, or TERSE_SECRET differs)",
                   (int)h.rank);
    } else if (h.size != boot->size) {
        rep.status = TERSE_ERR_MISMATCH;
        TERSE_WARN(BOOT, "rejected rank %d: it says the job has %d ranks, the root says %d",
                   (int)h.rank, (int)h.size, boot->size);
    } else if (h.rank <= 0 || h.rank >= boot->size || fds[h.rank] >= 0) {
        rep.status = TERSE_ERR_AUTH;
        STRAY(boot, "rejected a connection claiming rank %d: out of range or already joined",
                   (int)h.rank);
    } else if (h.bloblen != len) {
        rep.status = TERSE_ERR_PROTOCOL;
    }
    /* the blob is read even from a rank turned away: closing on unread bytes
     * would reset the connection and could lose the answer */
    char *dst = rep.status == TERSE_OK ? all + (size_t)h.rank * len : malloc(len);
    terse_status_t got = h.bloblen == len && dst ? terse__net_recv_all(fd, dst, len, hd) : TERSE_ERR_PROTOCOL;
    if (rep.status != TERSE_OK)
        free(dst);
    if (got != TERSE_OK && rep.status == TERSE_OK)
        return -1; /* hung up or stalled mid-blob */
    if (terse__net_send_all(fd, &rep, sizeof(rep), hd) != TERSE_OK || rep.status != TERSE_OK)
        return -1;
    return h.rank;
}

terse_status_t terse__boot_allgather(terse_boot_t *boot, const void *mine, size_t len, void *all_,
                                     double deadline)
{
    char *all = all_;
    int n = boot->size;
    terse_status_t st = TERSE_OK;
    memcpy(all + (size_t)boot->rank * len, mine, len);
    if (boot->rank != 0) {
        boot_reply_t rep;
        if ((st = find_root(boot, mine, len, deadline)) != TERSE_OK)
            return st;
        if ((st = terse__net_recv_all(boot->fd, &rep, sizeof(rep), deadline)) != TERSE_OK) {
            TERSE_WARN(BOOT, "rank %d: rendezvous with the root failed: %s", boot->rank,
                       terse_strerror(st));
            return st;
        }
        if (rep.magic != BOOT_MAGIC)
            return TERSE_ERR_PROTOCOL;
        if (rep.status != TERSE_OK) {
            TERSE_WARN(BOOT, "rank %d: the root gave up: %s", boot->rank,
                       terse_strerror((terse_status_t)rep.status));
            return (terse_status_t)rep.status;
        }
        st = terse__net_recv_all(boot->fd, all, len * (size_t)n, deadline);
        if (st != TERSE_OK)
            TERSE_WARN(BOOT, "rank %d: lost the root during rendezvous: %s", boot->rank,
                       terse_strerror(st));
        return st;
    }

    /* the root listens only now, with its transport open: it answers each
     * hello at once, so ranks probing a range never wait on it for long */
    if ((st = root_listen(boot, boot->root_addr)) != TERSE_OK)
        return st;
    int *fds = malloc(sizeof(int) * (size_t)n);
    if (!fds)
        return TERSE_ERR_NO_MEMORY;
    for (int r = 0; r < n; r++)
        fds[r] = -1;
    for (int joined = 1; joined < n;) {
        int fd;
        st = terse__net_accept(boot->lfd, deadline, &fd);
        if (st != TERSE_OK) {
            char missing[256] = "";
            size_t off = 0;
            for (int r = 1; r < n && off < sizeof(missing) - 12; r++)
                if (fds[r] < 0)
                    off += (size_t)snprintf(missing + off, sizeof(missing) - off, " %d", r);
            TERSE_WARN(BOOT, "root: %d of %d ranks joined before the timeout; missing:%s",
                       joined, n, missing);
            goto out;
        }
        int r = root_check(boot, fd, len, all, fds, deadline);
        if (r < 0) {
            close(fd);
            continue;
        }
        fds[r] = fd;
        joined++;
    }
    boot_reply_t rep = {BOOT_MAGIC, TERSE_OK};
    for (int r = 1; r < n; r++) {
        if ((st = terse__net_send_all(fds[r], &rep, sizeof(rep), deadline)) != TERSE_OK ||
            (st = terse__net_send_all(fds[r], all, len * (size_t)n, deadline)) != TERSE_OK) {
            TERSE_WARN(BOOT, "root: rank %d left during rendezvous", r);
            goto out;
        }
    }
out:
    if (boot->strays > 1)
        TERSE_WARN(BOOT, "root: %llu stray connections rejected during the rendezvous (TERSE_DEBUG=INFO lists them)",
                   (unsigned long long)boot->strays);
    for (int r = 1; r < n; r++)
        if (fds[r] >= 0) {
            /* Tell the ranks that did join why the job cannot start. */
            if (st != TERSE_OK) {
                boot_reply_t bad = {BOOT_MAGIC, st};
                terse__net_send_all(fds[r], &bad, sizeof(bad), terse__now() + 1.0);
            }
            close(fds[r]);
        }
    free(fds);
    return st;
}

void terse__boot_close(terse_boot_t *boot)
{
    if (boot->fd >= 0)
        close(boot->fd);
    if (boot->lfd >= 0)
        close(boot->lfd);
    boot->fd = boot->lfd = -1;
}
