/*
 * bootstrap.h - rendezvous at rank 0 (NCCL's shape): rank 0 listens at the
 * root address, every rank reports its identity, job-secret hash and address
 * blob, and rank 0 answers everyone with the table of all blobs. Connections
 * without the right secret, duplicates and strays are rejected and do not
 * disturb the job.
 */
#ifndef TERSE_BOOTSTRAP_H
#define TERSE_BOOTSTRAP_H

#include "terse.h"

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

typedef struct terse_boot {
    int rank, size;
    uint64_t secret_hash;
    struct sockaddr_in root; /* the root's address; its port once found */
    int nports;              /* ports to try from root's: "host:first-last" */
    int fd;  /* non-root: connection to the root */
    int lfd; /* root: listener */
    char local_ip[64]; /* address this process uses to reach the root */
    uint64_t strays;   /* root: connections rejected */
    char root_addr[256];
} terse_boot_t;

/* Parse a root address ("host:port" or "host:first-last"); a bad one is
 * reported here. root and nports may be NULL. */
terse_status_t terse__boot_check_root(const char *root_addr, struct sockaddr_in *root, int *nports);

/* Phase 1: parse root_addr ("host:port" or "host:first-last") and find the
 * local address that routes to it (boot->local_ip, where the transport
 * binds). */
terse_status_t terse__boot_open(terse_boot_t *boot, int rank, int size, const char *root_addr,
                                uint64_t secret_hash);

/* Phase 2: allgather of the blobs; all[r * len] receives rank r's. The root
 * listens on the first free port of the range and answers each hello (sent
 * with its blob) at once; the others go round the ports until one answers
 * as this job's root, then wait for the table - all until the deadline. */
terse_status_t terse__boot_allgather(terse_boot_t *boot, const void *mine, size_t len, void *all,
                                     double deadline);

void terse__boot_close(terse_boot_t *boot);

#endif
