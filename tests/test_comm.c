/*
 * test_comm.c - communicators on one shared context: split (parity, blocks,
 * TERSE_UNDEFINED), dup, create_group over a subset, split by node with
 * faked hosts, many communicators alive at once with interleaved and
 * reordered non-blocking calls (no cross-talk, bit-identical results, one
 * communicator's chunks parked while another's are consumed), errors scoped
 * to one communicator, destroy in any order, the out-of-band bootstrap hook,
 * shrink after kill -9 and after a rank stopped beyond the timeout, and
 * invalid arguments. Every case runs over each transport in
 * TERSE_TEST_TRANSPORTS (default tcp) and 1-8 ranks where it makes sense.
 */
#include "launcher.h"
#include "testutil.h"

#include <CUnit/Basic.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static const char *g_transport = "tcp";

static terse_status_t mk(const terse_launch_ctx_t *ctx, double timeout, terse_comm_t **comm)
{
    terse_comm_params_t p = TERSE_COMM_PARAMS_INIT;
    p.rank = ctx->rank;
    p.size = ctx->size;
    p.root_addr = ctx->root;
    p.secret = ctx->secret;
    p.transport = g_transport;
    p.timeout_sec = timeout;
    p.boot_timeout_sec = 120; /* start-up in the emulated guest can take longer than a short failure timeout */
    return terse_comm_create(&p, comm);
}

/* Allreduce of a value derived from each member's world rank; checks the
 * exact sum of those world ranks' values and that every member agrees. */
static int check_sum(const terse_launch_ctx_t *ctx, terse_comm_t *c, const int *world_of, int salt, size_t n)
{
    int size = terse_comm_size(c);
    double *x = malloc(n * sizeof(double));
    RCHECK(ctx, x != NULL, "malloc");
    for (size_t i = 0; i < n; i++)
        x[i] = (double)(ctx->rank * 1000 + salt) + (double)(i % 7);
    terse_status_t st = terse_allreduce(c, x, x, n, TERSE_FLOAT64, TERSE_SUM);
    const char *why = "";
    terse_comm_error(c, &why);
    RCHECK(ctx, st == TERSE_OK, "allreduce on a %d-rank communicator: %s (%s)", size, terse_strerror(st), why);
    for (size_t i = 0; i < n; i++) {
        double want = 0;
        for (int r = 0; r < size; r++)
            want += (double)(world_of[r] * 1000 + salt) + (double)(i % 7);
        if (x[i] != want) {
            double got = x[i];
            free(x);
            RCHECK(ctx, 0, "element %zu = %g, want %g", i, got, want);
        }
    }
    RCHECK(ctx, test_same_everywhere(c, x, n * sizeof(double)), "results differ between ranks");
    free(x);
    return 0;
}

static int *world_list(const terse_launch_ctx_t *ctx, terse_comm_t *c)
{
    /* every member's world rank, in the communicator's order */
    int n = terse_comm_size(c);
    int64_t me = ctx->rank, *all = malloc(sizeof(int64_t) * (size_t)n);
    int *w = malloc(sizeof(int) * (size_t)n);
    if (!all || !w || terse_allgather(c, &me, all, 1, TERSE_INT64) != TERSE_OK) {
        free(all), free(w);
        return NULL;
    }
    for (int r = 0; r < n; r++)
        w[r] = (int)all[r];
    free(all);
    return w;
}

/* ---- split --------------------------------------------------------------- */
static int body_split_parity(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *world, *half;
    RCHECK(ctx, mk(ctx, 30, &world) == TERSE_OK, "create");
    /* key = -rank: the new order is the reverse of the world's */
    RCHECK(ctx, terse_comm_split(world, ctx->rank % 2, -ctx->rank, &half) == TERSE_OK, "split");
    RCHECK(ctx, half != NULL, "no communicator");
    int n = ctx->size, mine = (n - ctx->rank % 2 + 1) / 2; /* ranks of my parity */
    RCHECK(ctx, terse_comm_size(half) == mine, "size %d, want %d", terse_comm_size(half), mine);
    int *w = world_list(ctx, half);
    RCHECK(ctx, w != NULL, "world list");
    for (int r = 0; r + 1 < mine; r++)
        RCHECK(ctx, w[r] > w[r + 1] && w[r] % 2 == ctx->rank % 2, "order %d: world %d before %d", r, w[r], w[r + 1]);
    RCHECK(ctx, strcmp(terse_comm_transport(half), terse_comm_transport(world)) == 0, "transport");
    if (check_sum(ctx, half, w, 1, 100000))
        return 1;
    /* the parent is untouched */
    int *ww = world_list(ctx, world);
    RCHECK(ctx, ww != NULL && check_sum(ctx, world, ww, 2, 1000) == 0, "world after split");
    free(w), free(ww);
    terse_comm_destroy(half);
    terse_comm_destroy(world);
    return 0;
}

static int body_split_blocks(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *world, *blk;
    RCHECK(ctx, mk(ctx, 30, &world) == TERSE_OK, "create");
    /* blocks of 2; with an odd count the last rank sits out */
    int out = ctx->size % 2 && ctx->rank == ctx->size - 1;
    RCHECK(ctx, terse_comm_split(world, out ? TERSE_UNDEFINED : ctx->rank / 2, 0, &blk) == TERSE_OK, "split");
    if (out) {
        RCHECK(ctx, blk == NULL, "TERSE_UNDEFINED got a communicator");
    } else {
        RCHECK(ctx, blk && terse_comm_size(blk) == 2 && terse_comm_rank(blk) == ctx->rank % 2, "block shape");
        int w[2] = {ctx->rank & ~1, ctx->rank | 1};
        if (check_sum(ctx, blk, w, 3, 5000))
            return 1;
        terse_comm_destroy(blk);
    }
    RCHECK(ctx, terse_barrier(world) == TERSE_OK, "barrier");
    terse_comm_destroy(world);
    return 0;
}

/* ---- dup and many communicators at once ---------------------------------- */
#define NCOMM 4
static int body_many(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *world, *c[NCOMM];
    RCHECK(ctx, mk(ctx, 30, &world) == TERSE_OK, "create");
    for (int i = 0; i < NCOMM; i++)
        RCHECK(ctx, terse_comm_dup(i ? c[i - 1] : world, &c[i]) == TERSE_OK && c[i], "dup %d", i);
    int n = ctx->size;
    size_t count = 300000; /* several chunks per peer: slots fill and credits flow */
    float *buf[NCOMM];
    terse_request_t *req[NCOMM];
    for (int round = 0; round < 3; round++) {
        /* every rank starts them in its own rotated order and waits in another */
        for (int k = 0; k < NCOMM; k++) {
            int i = (k + ctx->rank + round) % NCOMM;
            buf[i] = malloc(count * sizeof(float));
            RCHECK(ctx, buf[i] != NULL, "malloc");
            for (size_t j = 0; j < count; j++)
                buf[i][j] = (float)((i + 1) * (ctx->rank + 1)) + (float)(j % 5);
            RCHECK(ctx, terse_allreduce_start(c[i], buf[i], buf[i], count, TERSE_FLOAT32, TERSE_SUM, &req[i]) ==
                            TERSE_OK, "start %d", i);
        }
        for (int k = NCOMM - 1; k >= 0; k--) {
            int i = (k * 3 + ctx->rank) % NCOMM;
            terse_status_t st = terse_request_wait(req[i]);
            RCHECK(ctx, st == TERSE_OK, "wait %d: %s", i, terse_strerror(st));
        }
        for (int i = 0; i < NCOMM; i++) {
            for (size_t j = 0; j < count; j += 997) {
                float want = (float)((i + 1) * n * (n + 1) / 2) + (float)(n * (int)(j % 5));
                RCHECK(ctx, buf[i][j] == want, "comm %d elem %zu: %g want %g (cross-talk?)", i, j, buf[i][j], want);
            }
            RCHECK(ctx, test_same_everywhere(c[i], buf[i], count * sizeof(float)), "comm %d differs", i);
            free(buf[i]);
        }
    }
    for (int i = 0; i < NCOMM; i++)
        terse_comm_destroy(c[i]);
    terse_comm_destroy(world);
    return 0;
}

/* One rank starts a large allreduce on A and then runs a blocking one on B;
 * the others run B first and start A after: their connections carry A's
 * chunks ahead of B's, which must not block B. */
static int body_reordered(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *a, *b;
    RCHECK(ctx, mk(ctx, 30, &a) == TERSE_OK, "create");
    RCHECK(ctx, terse_comm_dup(a, &b) == TERSE_OK, "dup");
    size_t na = 2 << 20, nb = 100000;
    float *xa = malloc(na * sizeof(float)), *xb = malloc(nb * sizeof(float));
    RCHECK(ctx, xa && xb, "malloc");
    for (size_t i = 0; i < na; i++)
        xa[i] = (float)(ctx->rank + 1);
    for (size_t i = 0; i < nb; i++)
        xb[i] = (float)(2 * ctx->rank + 1);
    terse_request_t *ra = NULL;
    if (ctx->rank == 0)
        RCHECK(ctx, terse_allreduce_start(a, xa, xa, na, TERSE_FLOAT32, TERSE_SUM, &ra) == TERSE_OK, "start A");
    terse_status_t st = terse_allreduce(b, xb, xb, nb, TERSE_FLOAT32, TERSE_SUM);
    RCHECK(ctx, st == TERSE_OK, "B behind A's chunks: %s", terse_strerror(st));
    if (ctx->rank != 0)
        RCHECK(ctx, terse_allreduce_start(a, xa, xa, na, TERSE_FLOAT32, TERSE_SUM, &ra) == TERSE_OK, "start A");
    RCHECK(ctx, terse_request_wait(ra) == TERSE_OK, "A");
    float n = (float)ctx->size;
    RCHECK(ctx, xa[0] == n * (n + 1) / 2 && xa[na - 1] == xa[0], "A = %g", xa[0]);
    RCHECK(ctx, xb[0] == n * n && xb[nb - 1] == xb[0], "B = %g", xb[0]);
    free(xa), free(xb);
    terse_comm_destroy(b);
    terse_comm_destroy(a);
    return 0;
}

/* ---- create_group -------------------------------------------------------- */
static int body_group(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *world, *g = NULL;
    RCHECK(ctx, mk(ctx, 30, &world) == TERSE_OK, "create");
    int n = ctx->size, m = 0, ranks[8];
    for (int r = n - 1; r >= 0; r -= 2) /* odd-position ranks from the top, descending */
        ranks[m++] = r;
    int member = (n - 1 - ctx->rank) % 2 == 0;
    if (member) {
        RCHECK(ctx, terse_comm_create_group(world, m, ranks, &g) == TERSE_OK && g, "create_group");
        RCHECK(ctx, terse_comm_size(g) == m && terse_comm_rank(g) == (n - 1 - ctx->rank) / 2, "group shape");
        if (check_sum(ctx, g, ranks, 4, 20000))
            return 1;
        /* a second group over the same list is another communicator */
        terse_comm_t *g2;
        RCHECK(ctx, terse_comm_create_group(world, m, ranks, &g2) == TERSE_OK && g2, "second group");
        if (check_sum(ctx, g2, ranks, 5, 100))
            return 1;
        terse_comm_destroy(g2);
    }
    /* non-members never took part; the world still works for everyone */
    RCHECK(ctx, terse_barrier(world) == TERSE_OK, "barrier");
    if (g)
        terse_comm_destroy(g);
    terse_comm_destroy(world);
    return 0;
}

static int body_invalid(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *world, *x = (terse_comm_t *)1;
    RCHECK(ctx, mk(ctx, 30, &world) == TERSE_OK, "create");
    int n = ctx->size, me = ctx->rank;
    int dup2[2] = {me, me}, notme[1] = {(me + 1) % n}, range[2] = {me, n}, neg[1] = {-1};
    if (n > 1)
        RCHECK(ctx, terse_comm_create_group(world, 1, notme, &x) == TERSE_ERR_INVALID_ARG && !x, "caller not listed");
    x = (terse_comm_t *)1;
    RCHECK(ctx, terse_comm_create_group(world, 2, dup2, &x) == TERSE_ERR_INVALID_ARG && !x, "duplicate ranks");
    RCHECK(ctx, terse_comm_create_group(world, 2, range, &x) == TERSE_ERR_INVALID_ARG, "rank out of range");
    RCHECK(ctx, terse_comm_create_group(world, 1, neg, &x) == TERSE_ERR_INVALID_ARG, "negative rank");
    RCHECK(ctx, terse_comm_create_group(world, 0, dup2, &x) == TERSE_ERR_INVALID_ARG, "empty group");
    RCHECK(ctx, terse_comm_create_group(world, n + 1, dup2, &x) == TERSE_ERR_INVALID_ARG, "too many");
    RCHECK(ctx, terse_comm_split(world, 0, 0, NULL) == TERSE_ERR_INVALID_ARG, "NULL out");
    RCHECK(ctx, terse_comm_split(NULL, 0, 0, &x) == TERSE_ERR_INVALID_ARG, "NULL comm");
    RCHECK(ctx, terse_comm_dup(NULL, &x) == TERSE_ERR_INVALID_ARG, "NULL dup");
    RCHECK(ctx, terse_comm_shrink(NULL, &x) == TERSE_ERR_INVALID_ARG, "NULL shrink");
    /* a bad color on one rank fails the split on every rank ... */
    terse_status_t st = terse_comm_split(world, me == n - 1 ? -5 : 0, 0, &x);
    RCHECK(ctx, st == TERSE_ERR_INVALID_ARG && x == NULL, "bad color on rank %d: %s", n - 1, terse_strerror(st));
    /* ... and so does an unknown split type */
    st = terse_comm_split_type(world, me == 0 ? 77 : TERSE_SPLIT_NODE, 0, &x);
    RCHECK(ctx, st == TERSE_ERR_INVALID_ARG && x == NULL, "bad split type on rank 0: %s", terse_strerror(st));
    /* the communicator is still usable */
    int *w = world_list(ctx, world);
    RCHECK(ctx, w != NULL, "world list");
    int bad = check_sum(ctx, world, w, 6, 10);
    free(w);
    RCHECK(ctx, bad == 0, "world after bad calls");
    terse_comm_destroy(world);
    return 0;
}

/* ---- node awareness with faked hosts ------------------------------------- */
static int body_node(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    char host[32];
    int per = 3, node = ctx->rank / per, n = ctx->size;
    snprintf(host, sizeof(host), "fake-node-%d", node);
    terse_comm_params_t p;
    terse_comm_params_init(&p);
    p.rank = ctx->rank, p.size = n, p.root_addr = ctx->root, p.secret = ctx->secret;
    p.transport = g_transport, p.timeout_sec = 30, p.host_id = host;
    terse_comm_t *world, *local;
    RCHECK(ctx, terse_comm_create(&p, &world) == TERSE_OK, "create");
    int lsize = n - node * per < per ? n - node * per : per;
    RCHECK(ctx, terse_comm_local_size(world) == lsize, "local size %d, want %d", terse_comm_local_size(world), lsize);
    RCHECK(ctx, terse_comm_local_rank(world) == ctx->rank % per, "local rank %d", terse_comm_local_rank(world));
    RCHECK(ctx, terse_comm_node_count(world) == (n + per - 1) / per, "nodes %d", terse_comm_node_count(world));
    RCHECK(ctx, terse_comm_split_type(world, TERSE_SPLIT_NODE, 0, &local) == TERSE_OK && local, "split_type");
    RCHECK(ctx, terse_comm_size(local) == lsize && terse_comm_rank(local) == ctx->rank % per, "node comm shape");
    RCHECK(ctx, terse_comm_local_size(local) == lsize && terse_comm_node_count(local) == 1, "node comm locality");
    int w[3];
    for (int i = 0; i < lsize; i++)
        w[i] = node * per + i;
    if (check_sum(ctx, local, w, 7, 3000))
        return 1;
    /* leaders: local rank 0 of every node */
    terse_comm_t *leaders;
    int lead = terse_comm_local_rank(world) == 0;
    RCHECK(ctx, terse_comm_split(world, lead ? 0 : TERSE_UNDEFINED, 0, &leaders) == TERSE_OK, "leaders");
    RCHECK(ctx, lead == (leaders != NULL), "leader communicator");
    if (leaders) {
        RCHECK(ctx, terse_comm_size(leaders) == (n + per - 1) / per && terse_comm_local_size(leaders) == 1, "leaders");
        terse_comm_destroy(leaders);
    }
    terse_comm_destroy(local);
    terse_comm_destroy(world);
    return 0;
}

/* ---- errors stay in their communicator; destroy order -------------------- */
static int body_scoped_error(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *world, *a, *b;
    RCHECK(ctx, mk(ctx, 20, &world) == TERSE_OK, "create");
    RCHECK(ctx, terse_comm_dup(world, &a) == TERSE_OK && terse_comm_dup(world, &b) == TERSE_OK, "dups");
    static float x[50000];
    int odd = ctx->rank == ctx->size - 1;
    /* b: one rank calls broadcast where the others call allreduce */
    terse_status_t st = odd ? terse_broadcast(b, x, x, 50000, TERSE_FLOAT32, 0)
                            : terse_allreduce(b, x, x, 50000, TERSE_FLOAT32, TERSE_SUM);
    if (st == TERSE_OK)
        st = terse_barrier(b);
    RCHECK(ctx, st == TERSE_ERR_MISMATCH, "mismatch on b: got %s", terse_strerror(st));
    RCHECK(ctx, terse_comm_error(b, NULL) == TERSE_ERR_MISMATCH, "b's error is sticky");
    RCHECK(ctx, terse_comm_error(a, NULL) == TERSE_OK && terse_comm_error(world, NULL) == TERSE_OK, "leaked");
    int *w = world_list(ctx, a);
    RCHECK(ctx, w && check_sum(ctx, a, w, 8, 40000) == 0, "a after b failed");
    /* the parent goes first; its children keep working */
    terse_comm_destroy(world);
    RCHECK(ctx, check_sum(ctx, a, w, 9, 100) == 0, "a after its parent was destroyed");
    terse_comm_destroy(b);
    RCHECK(ctx, check_sum(ctx, a, w, 10, 100) == 0, "a after its sibling was destroyed");
    free(w);
    terse_comm_destroy(a);
    return 0;
}

/* ---- the out-of-band hook ------------------------------------------------ */
/* A shared-memory allgather between the forked ranks: a generation counter
 * and one slot per rank. */
typedef struct oob_shm {
    atomic_int arrived;
    int n;
    char slot[8][256];
} oob_shm_t;
typedef struct oob_ctx {
    oob_shm_t *shm;
    int rank;
    int gen;
    size_t len;
    void *rbuf;
} oob_ctx_t;
static oob_shm_t *g_oob;
static int g_oob_calls;

static terse_status_t oob_allgather(void *sbuf, void *rbuf, size_t len, void *info, void **req)
{
    oob_ctx_t *o = info;
    if (len > sizeof(o->shm->slot[0]))
        return TERSE_ERR_INVALID_ARG;
    /* a slot is reused only after everyone read the previous round (two phases) */
    while (atomic_load(&o->shm->arrived) < 2 * o->gen * o->shm->n)
        usleep(100);
    memcpy(o->shm->slot[o->rank], sbuf, len);
    atomic_fetch_add(&o->shm->arrived, 1);
    o->len = len;
    o->rbuf = rbuf;
    *req = o;
    g_oob_calls++;
    return TERSE_OK;
}
static terse_status_t oob_test(void *req)
{
    oob_ctx_t *o = req;
    if (atomic_load(&o->shm->arrived) < (2 * o->gen + 1) * o->shm->n)
        return TERSE_IN_PROGRESS;
    for (int r = 0; r < o->shm->n; r++)
        memcpy((char *)o->rbuf + (size_t)r * o->len, o->shm->slot[r], o->len);
    atomic_fetch_add(&o->shm->arrived, 1);
    o->gen++;
    return TERSE_OK;
}
static terse_status_t oob_free(void *req)
{
    (void)req;
    return TERSE_OK;
}

static int body_oob(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    oob_ctx_t o = {g_oob, ctx->rank, 0, 0, NULL};
    terse_comm_params_t p;
    terse_comm_params_init(&p);
    p.transport = g_transport;
    p.timeout_sec = 30;
    p.oob = (terse_oob_coll_t){oob_allgather, oob_test, oob_free, &o, ctx->size, ctx->rank};
    /* no rank, size, root address or secret: everything comes through the hook */
    terse_comm_t *world, *sub;
    terse_status_t st = terse_comm_create(&p, &world);
    RCHECK(ctx, st == TERSE_OK, "create through the hook: %s", terse_strerror(st));
    RCHECK(ctx, g_oob_calls >= (ctx->size > 1 ? 1 : 0), "the hook was not used");
    RCHECK(ctx, terse_comm_rank(world) == ctx->rank && terse_comm_size(world) == ctx->size, "identity");
    int *w = world_list(ctx, world);
    RCHECK(ctx, w && check_sum(ctx, world, w, 11, 70000) == 0, "allreduce");
    RCHECK(ctx, terse_comm_split(world, 0, -ctx->rank, &sub) == TERSE_OK && sub, "split");
    free(w);
    w = world_list(ctx, sub);
    RCHECK(ctx, w && check_sum(ctx, sub, w, 12, 100) == 0, "allreduce on the split");
    free(w);
    terse_comm_destroy(sub);
    terse_comm_destroy(world);
    return 0;
}

/* ---- shrink -------------------------------------------------------------- */
static int body_shrink_kill(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *world, *small;
    RCHECK(ctx, mk(ctx, 20, &world) == TERSE_OK, "create");
    int victim = 2, n = ctx->size;
    size_t count = 200000;
    double *x = malloc(count * sizeof(double));
    RCHECK(ctx, x != NULL, "malloc");
    terse_status_t st = TERSE_OK;
    for (int it = 0; it < 50 && st == TERSE_OK; it++) {
        if (ctx->rank == victim && it == 5) {
            /* dies with its allreduce half done */
            terse_request_t *req;
            terse_allreduce_start(world, x, x, count, TERSE_FLOAT64, TERSE_SUM, &req);
            int done;
            terse_request_test(req, &done);
            raise(SIGKILL);
        }
        for (size_t i = 0; i < count; i++)
            x[i] = 1;
        st = terse_allreduce(world, x, x, count, TERSE_FLOAT64, TERSE_SUM);
        RCHECK(ctx, st != TERSE_OK || x[count - 1] == n, "iteration %d: %g", it, x[count - 1]);
    }
    const char *why = "";
    terse_comm_error(world, &why);
    RCHECK(ctx, st == TERSE_ERR_PEER_FAILED, "got %s (%s), want PEER_FAILED", terse_strerror(st), why);
    char name[16];
    snprintf(name, sizeof(name), "rank %d", victim);
    RCHECK(ctx, strstr(why, name) != NULL, "'%s' does not name %s", why, name);
    st = terse_comm_shrink(world, &small);
    RCHECK(ctx, st == TERSE_OK && small, "shrink: %s", terse_strerror(st));
    RCHECK(ctx, terse_comm_size(small) == n - 1, "shrunk to %d", terse_comm_size(small));
    RCHECK(ctx, terse_comm_rank(small) == ctx->rank - (ctx->rank > victim), "rank %d", terse_comm_rank(small));
    int w[8], m = 0;
    for (int r = 0; r < n; r++)
        if (r != victim)
            w[m++] = r;
    if (check_sum(ctx, small, w, 13, count) || check_sum(ctx, small, w, 14, 10))
        return 1;
    terse_comm_destroy(small);
    terse_comm_destroy(world);
    free(x);
    return 0;
}

/* A rank stopped (SIGSTOP) beyond the timeout: the others shrink without it;
 * when it comes back it gets errors, and the survivors' results stay exact. */
static int body_shrink_stop(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *world, *small;
    double timeout = 3;
    RCHECK(ctx, mk(ctx, timeout, &world) == TERSE_OK, "create");
    int victim = ctx->size - 1, n = ctx->size;
    int64_t pid = getpid(), pids[8];
    terse_status_t pst = terse_allgather(world, &pid, pids, 1, TERSE_INT64);
    if (ctx->rank == victim && pst != TERSE_OK) {
        /* stopped before its own part of this allgather ended (its last
         * forward opens a connection to a peer that gave up on it): an
         * error, never data - all that is asked of it */
        terse_comm_destroy(world);
        return 0;
    }
    RCHECK(ctx, pst == TERSE_OK, "pids");
    size_t count = 50000;
    double *x = malloc(count * sizeof(double));
    RCHECK(ctx, x != NULL, "malloc");
    for (size_t i = 0; i < count; i++)
        x[i] = 1;
    if (ctx->rank == 0)
        kill((pid_t)pids[victim], SIGSTOP);
    terse_status_t st = terse_allreduce(world, x, x, count, TERSE_FLOAT64, TERSE_SUM);
    if (ctx->rank == victim) {
        /* it resumes long after the others gave up on it */
        RCHECK(ctx, st != TERSE_OK, "the stopped rank got a result");
        st = terse_comm_shrink(world, &small);
        RCHECK(ctx, st != TERSE_OK && small == NULL, "the stopped rank joined the shrunk communicator");
        terse_comm_destroy(world);
        free(x);
        return 0;
    }
    RCHECK(ctx, st == TERSE_ERR_TIMEOUT || st == TERSE_ERR_PEER_FAILED, "got %s", terse_strerror(st));
    st = terse_comm_shrink(world, &small);
    RCHECK(ctx, st == TERSE_OK && small && terse_comm_size(small) == n - 1, "shrink: %s", terse_strerror(st));
    int w[8];
    for (int r = 0; r < n - 1; r++)
        w[r] = r;
    if (check_sum(ctx, small, w, 15, count))
        return 1;
    RCHECK(ctx, terse_barrier(small) == TERSE_OK, "barrier");
    if (ctx->rank == 0)
        kill((pid_t)pids[victim], SIGCONT);
    usleep(300000); /* its late data and its shrink attempt arrive now */
    if (check_sum(ctx, small, w, 16, count) || check_sum(ctx, small, w, 17, 7))
        return 1;
    RCHECK(ctx, terse_barrier(small) == TERSE_OK, "final barrier");
    terse_comm_destroy(small);
    terse_comm_destroy(world);
    free(x);
    return 0;
}

/* ---- runner ---------------------------------------------------------------- */
static void run_n(const char *name, int n, double limit, terse_rank_fn fn, int victim, int victim_code)
{
    int codes[64];
    int rc = terse_launch(n, limit, fn, NULL, codes);
    if (rc < 0)
        return; /* another size under an external launcher */
    int bad = 0;
    for (int r = 0; r < n; r++) {
        int want = r == victim ? victim_code : 0;
        if (codes[r] != want) {
            fprintf(stderr, "  %s, %d ranks over %s: rank %d exited with %d (want %d)%s\n", name, n, g_transport, r,
                    codes[r], want, codes[r] == TERSE_LAUNCH_TIMEOUT ? " (timeout)" : "");
            bad = 1;
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static const int all_counts[] = {1, 2, 3, 4, 5, 8};
static void run_all(const char *name, terse_rank_fn fn, int min)
{
    for (size_t i = 0; i < sizeof(all_counts) / sizeof(all_counts[0]); i++)
        if (all_counts[i] >= min)
            run_n(name, all_counts[i], 120, fn, -1, 0);
}

static void t_split_parity(void) { run_all("split by parity", body_split_parity, 1); }
static void t_split_blocks(void) { run_all("split by blocks", body_split_blocks, 1); }
static void t_many(void) { run_all("many communicators", body_many, 1); }
static void t_reordered(void) { run_all("reordered across communicators", body_reordered, 2); }
static void t_group(void) { run_all("create_group", body_group, 1); }
static void t_invalid(void) { run_all("invalid arguments", body_invalid, 1); }
static void t_node(void) { run_all("node split", body_node, 1); }
static void t_scoped(void) { run_all("scoped error, destroy order", body_scoped_error, getenv("TERSE_TEST_MIN") ? atoi(getenv("TERSE_TEST_MIN")) : 2); }
static void t_oob(void)
{
    for (size_t i = 0; i < sizeof(all_counts) / sizeof(all_counts[0]); i++) {
        memset(g_oob, 0, sizeof(*g_oob));
        g_oob->n = all_counts[i];
        run_n("oob hook", all_counts[i], 120, body_oob, -1, 0);
    }
}
static void t_shrink_kill(void) { run_n("shrink after kill -9", 5, 120, body_shrink_kill, 2, TERSE_LAUNCH_SIGNAL + SIGKILL); }
static void t_shrink_stop(void) { run_n("shrink after SIGSTOP", 4, 120, body_shrink_stop, -1, 0); }

/* TERSE_TEST_FILTER=text runs only the cases whose name contains it. */
static void add_test(CU_pSuite s, const char *name, CU_TestFunc fn)
{
    const char *only = getenv("TERSE_TEST_FILTER");
    if (!only || !*only || strstr(name, only))
        CU_add_test(s, name, fn);
}

int main(void)
{
    const char *list = getenv("TERSE_TEST_TRANSPORTS");
    static char buf[128];
    snprintf(buf, sizeof(buf), "%s", list && *list ? list : "tcp");
    g_oob = mmap(NULL, sizeof(*g_oob), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_oob == MAP_FAILED || CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    int failures = 0;
    for (char *save, *tp = strtok_r(buf, ",", &save); tp; tp = strtok_r(NULL, ",", &save)) {
        g_transport = tp;
        char name[64];
        snprintf(name, sizeof(name), "communicators over %s", tp);
        CU_pSuite s = CU_add_suite(name, NULL, NULL);
#define CU_add_test(s, name, fn) add_test(s, name, fn)
        CU_add_test(s, "split by parity, reversed keys (1-8 ranks)", t_split_parity);
        CU_add_test(s, "split by blocks with TERSE_UNDEFINED (1-8 ranks)", t_split_blocks);
        CU_add_test(s, "4 dups, rotated starts and waits, no cross-talk (1-8 ranks)", t_many);
        CU_add_test(s, "one communicator's chunks ahead of another's (2-8 ranks)", t_reordered);
        CU_add_test(s, "create_group over a subset (1-8 ranks)", t_group);
        CU_add_test(s, "invalid arguments -> INVALID_ARG, communicator usable (1-8 ranks)", t_invalid);
        CU_add_test(s, "node split and local rank with faked hosts (1-8 ranks)", t_node);
        CU_add_test(s, "mismatch scoped to one communicator, destroy order (2-8 ranks)", t_scoped);
        CU_add_test(s, "out-of-band bootstrap hook (1-8 ranks)", t_oob);
        CU_add_test(s, "kill -9 of 1 of 5 ranks mid-loop, shrink, exact allreduce", t_shrink_kill);
        CU_add_test(s, "SIGSTOP beyond the timeout: shrink without it, it gets errors", t_shrink_stop);
#undef CU_add_test
        CU_basic_run_suite(s);
        failures += (int)CU_get_number_of_tests_failed();
    }
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
