/* config.h - every tunable of terse, read from the environment in one place. */
#ifndef TERSE_CONFIG_H
#define TERSE_CONFIG_H

#include <stddef.h>
#include <stdio.h>

/* Values after parsing. The table in config.c names, defaults and documents them. */
typedef struct terse_config {
    char debug[16];          /* NONE, WARN, INFO, TRACE */
    char debug_subsys[128];  /* comma list of INIT, BOOT, NET, COLL, ALL */
    char transport[16];      /* auto, tcp, verbs */
    double timeout_sec;      /* silent peer limit */
    double boot_timeout_sec; /* rendezvous limit, 0: timeout_sec */
    int progress_thread;     /* 1: a progress thread per context */
    char root_addr[256];     /* host:port of the rendezvous root */
    char secret[128];        /* per-job secret */
    char bind_addr[64];      /* local address the transports listen on */
    size_t chunk_size;       /* payload bytes per pipelined chunk (slot) */
    int slots;               /* receive slots (credits) per peer */
    int bounce_slots;        /* verbs: shared bounce pool */
    char allreduce_algo[16]; /* auto, ring, rd */
    size_t rd_threshold;     /* allreduce bytes at or below which rd is used */
    size_t ring_threshold;   /* allreduce bytes above which the ring is used */
    size_t tcp_sockbuf;      /* SO_SNDBUF / SO_RCVBUF of data sockets */
    int spin_us;             /* poll without sleeping this long before blocking */
    int tcp_place;           /* receive COPY chunks straight into user memory */
    int reg_cache;           /* automatic registrations kept (0: off) */
    char compressed_algo[16];/* auto, allgather, two_phase, ring */
    size_t compressed_threshold; /* auto: two_phase from this many float32 bytes */
    double link_gbps;        /* the link's rate, for auto choices (0: unknown) */
    double link_latency_us;  /* ... and its per-message latency */
    char ib_device[64];      /* verbs device[:port] */
    char ib_addr[64];        /* verbs IPv4 address */
    int ib_gid_index;        /* -1: automatic */
    int ib_timeout;          /* QP ack timeout exponent */
    int ib_retry;            /* QP retry count */
    size_t stash_limit;      /* bytes parked off the receive slots */
    char host_id[128];       /* node identity override */
    int rank;                /* TERSE_RANK, -1 if unset */
    int size;                /* TERSE_SIZE, 0 if unset */
} terse_config_t;

/* What the launcher's environment says about this process. */
typedef struct terse_launch_env {
    int rank;           /* -1 if no launcher variable found */
    int size;           /* 0 if not found */
    const char *source; /* "TERSE", "OMPI", "PMI", "SLURM", "TORCHRUN" or NULL */
    char jobid[128];    /* launcher job id ("" if none) */
    char master[256];   /* MASTER_ADDR:MASTER_PORT when set */
} terse_launch_env_t;

/* Read all TERSE_* variables into cfg (defaults for unset ones); warn about
 * unknown TERSE_* names and unparsable values. Never fails: a bad value keeps
 * the default and is logged. */
void terse__config_load(terse_config_t *cfg);

/* Read the launcher variables (OMPI, PMI, Slurm, torchrun, TERSE). */
void terse__config_launch_env(terse_launch_env_t *env);

/* Print the table of knobs: name, default, current value, help. */
void terse__config_print(FILE *out);

/* Parse "123", "64K", "4M", "1G" into bytes; returns -1 on error. */
int terse__parse_size(const char *s, size_t *out);

#endif
