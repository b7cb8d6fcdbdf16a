/*
 * launcher.h - run a function as N local ranks (fork), with a wall-clock
 * limit, or - when started by mpirun/srun - as this process's rank.
 */
#ifndef TERSE_TEST_LAUNCHER_H
#define TERSE_TEST_LAUNCHER_H

typedef struct terse_launch_ctx {
    int rank, size;
    char root[64];   /* root_addr for terse_comm_params_t; empty under mpirun/srun: the library derives it */
    char secret[64]; /* unique per launch */
} terse_launch_ctx_t;

/* Body of one rank: 0 on success, anything else is a failure. */
typedef int (*terse_rank_fn)(const terse_launch_ctx_t *ctx, void *arg);

/* Codes in codes[] besides exit statuses: */
#define TERSE_LAUNCH_TIMEOUT 124 /* killed at the wall-clock limit */
#define TERSE_LAUNCH_SIGNAL 128  /* + signal number */

/* 1 when this process was started by an external launcher: TERSE_RANK and
 * TERSE_SIZE, mpirun, PMI, srun or torchrun (RANK / WORLD_SIZE) - the same
 * variables the library reads. */
int terse_launch_external(int *rank, int *size);

/* Seconds on the monotonic clock (timing in tests and benchmarks). */
double terse_launch_now(void);

/*
 * Fork n ranks running fn and wait at most timeout_sec for all of them; a rank
 * still running then is killed (its code is TERSE_LAUNCH_TIMEOUT). Under an
 * external launcher with the same size, fn runs in this process instead; with
 * another size the case is skipped (returns -1). codes may be NULL.
 * Returns 0 when every rank returned 0, else 1.
 */
int terse_launch(int n, double timeout_sec, terse_rank_fn fn, void *arg, int *codes);

#endif
