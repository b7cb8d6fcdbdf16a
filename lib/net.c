/* net.c - socket helpers. Every wait is bounded by an absolute deadline. */
#include "net.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

double terse__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int ms_left(double deadline)
{
    double left = deadline - terse__now();
    if (left <= 0)
        return 0;
    return left > 1e6 ? 1000000000 : (int)(left * 1000) + 1;
}

uint64_t terse__hash64(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = 1469598103934665603ull ^ seed;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

terse_status_t terse__net_parse(const char *hostport, struct sockaddr_in *out, int *nports)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof(host))
        return TERSE_ERR_INVALID_ARG;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10), last = port;
    if (*end == '-' && nports)
        last = strtol(end + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535 || last < port || last > 65535 ||
        last - port >= TERSE_NET_MAX_PORTS || (port == 0 && last != 0))
        return TERSE_ERR_INVALID_ARG;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) {
        TERSE_WARN(BOOT, "cannot resolve host '%s'", host);
        return TERSE_ERR_INVALID_ARG;
    }
    memcpy(out, res->ai_addr, sizeof(*out));
    out->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    if (nports)
        *nports = (int)(last - port) + 1;
    return TERSE_OK;
}

void terse__net_set_nonblocking(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK));
}

terse_status_t terse__net_listen(struct sockaddr_in *addr, int *fd_out)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return TERSE_ERR_SYSTEM;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)addr, sizeof(*addr)) != 0 || listen(fd, 1024) != 0) {
        int err = errno;
        close(fd);
        errno = err;
        return TERSE_ERR_SYSTEM;
    }
    socklen_t len = sizeof(*addr);
    getsockname(fd, (struct sockaddr *)addr, &len);
    terse__net_set_nonblocking(fd, 1);
    *fd_out = fd;
    return TERSE_OK;
}

int terse__net_connect_once(const struct sockaddr_in *addr, double deadline, int *fd_out)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    terse__net_set_nonblocking(fd, 1);
    int rc = connect(fd, (const struct sockaddr *)addr, sizeof(*addr));
    if (rc != 0 && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, ms_left(deadline)) == 1) {
            int err = 0;
            socklen_t el = sizeof(err);
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
            rc = err ? -1 : 0;
            errno = err;
        } else {
            errno = ETIMEDOUT;
        }
    }
    if (rc != 0) {
        int err = errno;
        close(fd);
        return err ? err : ECONNREFUSED;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *fd_out = fd;
    return 0;
}

terse_status_t terse__net_connect(const struct sockaddr_in *addr, double deadline, int *fd_out)
{
    double backoff = 0.01;
    for (;;) {
        int err = terse__net_connect_once(addr, deadline, fd_out);
        if (!err)
            return TERSE_OK;
        if (terse__now() + backoff >= deadline)
            return TERSE_ERR_TIMEOUT;
        if (err != ECONNREFUSED && err != ETIMEDOUT && err != ECONNRESET && err != EAGAIN)
            TERSE_INFO(BOOT, "connect failed (%s), retrying", strerror(err));
        usleep((useconds_t)(backoff * 1e6));
        if (backoff < 0.2)
            backoff *= 2;
    }
}

terse_status_t terse__net_accept(int lfd, double deadline, int *fd_out)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            *fd_out = fd;
            return TERSE_OK;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
            return TERSE_ERR_SYSTEM;
        int ms = ms_left(deadline);
        if (ms == 0)
            return TERSE_ERR_TIMEOUT;
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        poll(&p, 1, ms);
    }
}

static terse_status_t io_all(int fd, void *buf, size_t len, double deadline, int is_send)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = is_send ? send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT)
                            : recv(fd, p, len, MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n == 0)
            return TERSE_ERR_PEER_FAILED;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return TERSE_ERR_PEER_FAILED;
        int ms = ms_left(deadline);
        if (ms == 0)
            return TERSE_ERR_TIMEOUT;
        struct pollfd pf = {.fd = fd, .events = is_send ? POLLOUT : POLLIN};
        poll(&pf, 1, ms);
    }
    return TERSE_OK;
}

terse_status_t terse__net_send_all(int fd, const void *buf, size_t len, double deadline)
{
    return io_all(fd, (void *)buf, len, deadline, 1);
}

terse_status_t terse__net_recv_all(int fd, void *buf, size_t len, double deadline)
{
    return io_all(fd, buf, len, deadline, 0);
}
