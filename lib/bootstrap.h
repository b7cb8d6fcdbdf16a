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

#define TERSE_BOOT_BLOB_MAX 128

typedef struct terse_boot {
    int rank, size;
    uint64_t secret_hash;
    size_t bloblen;
    struct sockaddr_in root; /* the root's address; its port once found */
    int nports;              /* ports to try from root's: "host:first-last" */
    int fd;  /* non-root: connection to the root */
    int lfd; /* root: listener */
    char local_ip[64]; /* address this process uses to reach the root */
} terse_boot_t;

/* Phase 1: the root listens on the first free port of root_addr
 * ("host:port" or "host:first-last"); the others go round those ports until
 * one answers their hello as this job's root (retrying until the deadline).
 * Every rank's blob for phase 2 has bloblen bytes. Fills boot->local_ip. */
terse_status_t terse__boot_open(terse_boot_t *boot, int rank, int size, const char *root_addr,
                                uint64_t secret_hash, size_t bloblen, double deadline);

/* Phase 2: allgather of fixed-size blobs; all[r * len] receives rank r's. */
terse_status_t terse__boot_allgather(terse_boot_t *boot, const void *mine, size_t len, void *all,
                                     double deadline);

void terse__boot_close(terse_boot_t *boot);

#endif
