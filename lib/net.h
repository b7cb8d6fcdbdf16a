/* net.h - blocking-with-deadline socket helpers shared by bootstrap and the TCP transport. */
#ifndef TERSE_NET_H
#define TERSE_NET_H

#include "terse.h"

#include <netinet/in.h>
#include <stddef.h>

/* Monotonic clock in seconds. */
double terse__now(void);

/* Most ports a "host:first-last" address may name. */
#define TERSE_NET_MAX_PORTS 64

/* "host:port" -> IPv4 socket address (host may be a name). With nports,
 * "host:first-last" is also accepted: out gets the first port and *nports
 * how many there are (1 for a single port). */
terse_status_t terse__net_parse(const char *hostport, struct sockaddr_in *out, int *nports);

/* Listen on addr (port 0 picks one); addr is updated with the bound port.
 * Fails quietly with errno set: the caller knows what the port was for. */
terse_status_t terse__net_listen(struct sockaddr_in *addr, int *fd);

/* One connection attempt bounded by the deadline: 0 or the errno. */
int terse__net_connect_once(const struct sockaddr_in *addr, double deadline, int *fd);

/* Connect, retrying refused connections until the deadline (the peer may not
 * be listening yet). */
terse_status_t terse__net_connect(const struct sockaddr_in *addr, double deadline, int *fd);

/* Accept one connection, waiting until the deadline. */
terse_status_t terse__net_accept(int lfd, double deadline, int *fd);

/* Send or receive exactly len bytes before the deadline. recv returns
 * TERSE_ERR_PEER_FAILED on EOF. */
terse_status_t terse__net_send_all(int fd, const void *buf, size_t len, double deadline);
terse_status_t terse__net_recv_all(int fd, void *buf, size_t len, double deadline);

void terse__net_set_nonblocking(int fd, int on);

/* 64-bit FNV-1a, used to compare job secrets without sending them. */
uint64_t terse__hash64(const void *data, size_t len, uint64_t seed);

/* Fold one value into a running signature hash. */
static inline uint64_t terse__mix64(uint64_t h, uint64_t v) { return terse__hash64(&v, sizeof(v), h); }

#endif
