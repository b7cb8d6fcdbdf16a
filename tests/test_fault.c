/*
 * test_fault.c - failure behaviour: a rank killed mid-collective, a rank that
 * stops responding, mismatched calls (count, op, dtype, collective, sequence),
 * a process with the wrong job secret, garbage connections to the root, busy
 * ports in the root's range, malformed root addresses, a rank that never
 * shows up, and the sticky error afterwards. Every survivor must
 * return an error (never hang) within the timeout, naming the peer.
 */
#include "launcher.h"
#include "testutil.h"

#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *g_transport = "tcp";


/* Start-up gets its own generous limit: in the emulated soft-RoCE guest
 * under CI load it can take longer than the short failure timeouts below. */
static terse_status_t mk_boot(const terse_launch_ctx_t *ctx, double timeout, double boot, const char *secret,
                              terse_comm_t **comm)
{
    terse_comm_params_t p = {.struct_size = sizeof(p), .rank = ctx->rank, .size = ctx->size,
                             .root_addr = ctx->root, .secret = secret ? secret : ctx->secret,
                             .transport = g_transport, .timeout_sec = timeout, .boot_timeout_sec = boot};
    return terse_comm_create(&p, comm);
}

static terse_status_t mk(const terse_launch_ctx_t *ctx, double timeout, const char *secret, terse_comm_t **comm)
{
    return mk_boot(ctx, timeout, 120, secret, comm);
}

/* ---- a rank dies in the middle of a large allreduce ---------------------- */
static int body_kill(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *comm;
    RCHECK(ctx, mk(ctx, 20, NULL, &comm) == TERSE_OK, "create");
    size_t n = 8 << 20;
    float *x = calloc(n, sizeof(float));
    terse_status_t st = terse_allreduce(comm, x, x, 1000, TERSE_FLOAT32, TERSE_SUM);
    if (ctx->rank == ctx->size - 1) {
        /* The victim waits until everyone finished the warm-up (the barrier),
         * gives them time to leave the barrier, then dies with data in flight. */
        RCHECK(ctx, st == TERSE_OK && terse_barrier(comm) == TERSE_OK, "victim warm-up");
        usleep(300000);
        terse_request_t *req;
        terse_allreduce_start(comm, x, x, n, TERSE_FLOAT32, TERSE_SUM, &req);
        int done;
        for (int i = 0; i < 3; i++)
            terse_request_test(req, &done);
        _exit(0); /* no goodbye */
    }
    RCHECK(ctx, st == TERSE_OK, "warm-up: %s", terse_strerror(st));
    double t0 = terse_launch_now();
    /* A survivor may still be in the barrier when the victim dies: either
     * call may be the one that reports it. */
    st = terse_barrier(comm);
    if (st == TERSE_OK)
        st = terse_allreduce(comm, x, x, n, TERSE_FLOAT32, TERSE_SUM);
    double el = terse_launch_now() - t0;
    const char *detail;
    terse_status_t sticky = terse_comm_error(comm, &detail);
    RCHECK(ctx, st == TERSE_ERR_PEER_FAILED, "got %s (%s), want PEER_FAILED", terse_strerror(st), detail);
    RCHECK(ctx, el < 20, "took %.1f s", el);
    char name[32];
    snprintf(name, sizeof(name), "rank %d", ctx->size - 1);
    RCHECK(ctx, strstr(detail, name) != NULL, "detail '%s' does not name %s", detail, name);
    RCHECK(ctx, sticky == st, "error not sticky");
    /* later calls fail at once with the same status */
    RCHECK(ctx, terse_barrier(comm) == TERSE_ERR_PEER_FAILED, "sticky barrier");
    RCHECK(ctx, terse_allreduce(comm, x, x, 4, TERSE_FLOAT32, TERSE_SUM) == TERSE_ERR_PEER_FAILED, "sticky");
    terse_comm_destroy(comm);
    free(x);
    return 0;
}

/* ---- a rank stops responding (alive, silent) ---------------------------- */
static int body_silent(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *comm;
    RCHECK(ctx, mk(ctx, 5.0, NULL, &comm) == TERSE_OK, "create");
    float x[1000] = {0};
    RCHECK(ctx, terse_allreduce(comm, x, x, 1000, TERSE_FLOAT32, TERSE_SUM) == TERSE_OK, "warm-up");
    int silent = 1;
    if (ctx->rank == silent) {
        sleep(12); /* never calls the collective within the others' timeout */
        terse_comm_destroy(comm);
        return 0;
    }
    double t0 = terse_launch_now();
    terse_status_t st = terse_allreduce(comm, x, x, 1000, TERSE_FLOAT32, TERSE_SUM);
    double el = terse_launch_now() - t0;
    const char *detail;
    terse_comm_error(comm, &detail);
    RCHECK(ctx, st == TERSE_ERR_TIMEOUT, "got %s (%s), want TIMEOUT", terse_strerror(st), detail);
    RCHECK(ctx, el >= 4.9 && el < 25, "timeout after %.2f s, TERSE_TIMEOUT 5 s", el);
    RCHECK(ctx, strstr(detail, "rank") != NULL, "detail '%s' names no peer", detail);
    terse_comm_destroy(comm);
    return 0;
}

/* ---- mismatched calls -------------------------------------------------- */
typedef enum { MM_COUNT, MM_OP, MM_DTYPE, MM_COLL, MM_SEQ, MM_ROOT } mm_kind_t;

static int body_mismatch(const terse_launch_ctx_t *ctx, void *arg)
{
    mm_kind_t kind = *(mm_kind_t *)arg;
    terse_comm_t *comm;
    RCHECK(ctx, mk(ctx, 10, NULL, &comm) == TERSE_OK, "create");
    static float x[200000], y[200000];
    int odd = ctx->rank == ctx->size - 1;
    size_t count = 100000;
    RCHECK(ctx, terse_allreduce(comm, x, y, count, TERSE_FLOAT32, TERSE_SUM) == TERSE_OK, "first call");
    terse_status_t st;
    switch (kind) {
    case MM_COUNT: st = terse_allreduce(comm, x, y, odd ? count + 5 : count, TERSE_FLOAT32, TERSE_SUM); break;
    case MM_OP: st = terse_allreduce(comm, x, y, count, TERSE_FLOAT32, odd ? TERSE_MAX : TERSE_SUM); break;
    case MM_DTYPE: st = terse_allreduce(comm, x, y, count, odd ? TERSE_INT32 : TERSE_FLOAT32, TERSE_SUM); break;
    case MM_COLL:
        st = odd ? terse_broadcast(comm, x, y, count, TERSE_FLOAT32, 0)
                 : terse_allreduce(comm, x, y, count, TERSE_FLOAT32, TERSE_SUM);
        if (odd && st == TERSE_OK) /* a receiver-only rank may finish; the next call must fail */
            st = terse_barrier(comm);
        break;
    case MM_ROOT:
        st = terse_broadcast(comm, x, y, count, TERSE_FLOAT32, odd ? 1 : 0);
        if (st == TERSE_OK)
            st = terse_barrier(comm);
        break;
    default: /* MM_SEQ: one rank makes an extra call first */
        st = TERSE_OK;
        if (odd)
            st = terse_allreduce(comm, x, y, 7, TERSE_FLOAT32, TERSE_SUM);
        if (st == TERSE_OK)
            st = terse_allreduce(comm, x, y, count, TERSE_FLOAT32, TERSE_SUM);
        if (st == TERSE_OK)
            st = terse_barrier(comm);
        break;
    }
    const char *detail;
    terse_comm_error(comm, &detail);
    /* Over verbs a rank occasionally sees a peer's disconnect before that
     * peer's forwarded abort (RDMA CM and the data QP are separate paths), and
     * reports the peer gone instead: still an error on every rank, but the
     * cause is attributed less precisely (noted as a known limit). */
    int verbs = strcmp(g_transport, "verbs") == 0;
    RCHECK(ctx, st == TERSE_ERR_MISMATCH || (verbs && st == TERSE_ERR_PEER_FAILED),
           "kind %d: got %s (%s), want MISMATCH", (int)kind, terse_strerror(st), detail);
    terse_comm_destroy(comm);
    return 0;
}

/* ---- wrong job secret and stray connections ----------------------------- */
static int body_secret(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    /* rank 0 and 1 are the job (size 2); "rank 2" is an intruder that claims
     * to be rank 1 with another secret, and arrives first. */
    terse_launch_ctx_t c = *ctx;
    c.size = 2;
    if (ctx->rank == 2) {
        c.rank = 1;
        terse_comm_t *comm = NULL;
        terse_status_t st = mk(&c, 5, "another-job", &comm);
        RCHECK(ctx, st == TERSE_ERR_AUTH, "intruder got %s, want AUTH", terse_strerror(st));
        RCHECK(ctx, comm == NULL, "intruder got a communicator");
        return 0;
    }
    if (ctx->rank == 0) {
        /* strays: a connection that sends garbage and one that sends nothing */
        struct sockaddr_in a = {.sin_family = AF_INET};
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        a.sin_port = htons((uint16_t)atoi(strchr(ctx->root, ':') + 1));
        if (fork() == 0) {
            usleep(100000);
            for (int k = 0; k < 2; k++) {
                int fd = socket(AF_INET, SOCK_STREAM, 0);
                if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && k == 0)
                    (void)!write(fd, "GET / HTTP/1.0\r\n\r\n", 18);
                usleep(50000);
                close(fd);
            }
            _exit(0);
        }
    }
    if (ctx->rank == 1)
        usleep(800000); /* the intruder comes first */
    terse_comm_t *comm;
    terse_status_t st = mk(&c, 15, NULL, &comm);
    RCHECK(ctx, st == TERSE_OK, "real rank %d: %s", c.rank, terse_strerror(st));
    int v = c.rank + 1, sum = 0;
    RCHECK(ctx, terse_allreduce(comm, &v, &sum, 1, TERSE_INT32, TERSE_SUM) == TERSE_OK, "allreduce");
    RCHECK(ctx, sum == 3, "sum %d", sum);
    terse_comm_destroy(comm);
    return 0;
}

/* ---- the root's port range: busy ports are skipped ----------------------
 * Rank 0 fills the first three ports of the range before creating: a
 * listener that never answers, a port bound but not listening, and another
 * job's root. The job must meet on the fourth port. */
static int probe_range(int *first)
{
    for (int tries = 0; tries < 200; tries++) {
        int p = 11000 + (int)((unsigned)(getpid() * 7919 + tries * 104729) % 19000u), ok = 1;
        for (int i = 0; i < 5 && ok; i++) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(p + i))};
            ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
            if (fd >= 0)
                close(fd);
        }
        if (ok) {
            *first = p;
            return 0;
        }
    }
    return -1;
}

static int body_busy_ports(const terse_launch_ctx_t *ctx, void *arg)
{
    const int *first = arg, p = *first;
    char range[64];
    snprintf(range, sizeof(range), "127.0.0.1:%d-%d", p, p + 4);
    pid_t foreign = -1;
    int silent = -1, bound = -1;
    if (ctx->rank == 0) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
        silent = socket(AF_INET, SOCK_STREAM, 0);
        RCHECK(ctx, bind(silent, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(silent, 16) == 0,
               "silent listener on %d", p);
        a.sin_port = htons((uint16_t)(p + 1));
        bound = socket(AF_INET, SOCK_STREAM, 0);
        RCHECK(ctx, bind(bound, (struct sockaddr *)&a, sizeof(a)) == 0, "bind %d", p + 1);
        if ((foreign = fork()) == 0) {
            /* another job's root, waiting for a rank that never comes */
            char other[64];
            snprintf(other, sizeof(other), "127.0.0.1:%d", p + 2);
            terse_comm_params_t op = {.rank = 0, .size = 2, .root_addr = other, .secret = "other-job",
                                      .transport = g_transport, .timeout_sec = 12};
            terse_comm_t *oc = NULL;
            _exit(terse_comm_create(&op, &oc) == TERSE_ERR_TIMEOUT ? 0 : 1);
        }
        /* until the other job's root listens (opening its transport can take
         * seconds in the emulated guest): a connection it then drops as a stray */
        struct sockaddr_in f = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(p + 2))};
        inet_pton(AF_INET, "127.0.0.1", &f.sin_addr);
        for (double t1 = terse_launch_now(); terse_launch_now() - t1 < 20;) {
            int fd = socket(AF_INET, SOCK_STREAM, 0), up = fd >= 0 && connect(fd, (struct sockaddr *)&f, sizeof(f)) == 0;
            if (fd >= 0)
                close(fd);
            if (up)
                break;
            usleep(50000);
        }
    }
    terse_comm_params_t cp = {.rank = ctx->rank, .size = ctx->size, .root_addr = range, .secret = ctx->secret,
                              .transport = g_transport, .timeout_sec = 40};
    terse_comm_t *comm = NULL;
    double t0 = terse_launch_now();
    terse_status_t st = terse_comm_create(&cp, &comm);
    RCHECK(ctx, st == TERSE_OK, "create over %s: %s", range, terse_strerror(st));
    /* a few rounds of the silent port's 3 s, even in a loaded emulator */
    RCHECK(ctx, terse_launch_now() - t0 < 30, "took %.1f s to find the root", terse_launch_now() - t0);
    int v = ctx->rank + 1, sum = 0;
    RCHECK(ctx, terse_allreduce(comm, &v, &sum, 1, TERSE_INT32, TERSE_SUM) == TERSE_OK, "allreduce");
    RCHECK(ctx, sum == ctx->size * (ctx->size + 1) / 2, "sum %d", sum);
    terse_comm_destroy(comm);
    if (ctx->rank == 0) {
        int ws = 0;
        RCHECK(ctx, waitpid(foreign, &ws, 0) == foreign && WIFEXITED(ws) && WEXITSTATUS(ws) == 0,
               "the other job's root did not listen on %d and time out alone", p + 2);
        close(silent), close(bound);
    }
    return 0;
}

/* ---- malformed root addresses fail at once on every rank ----------------- */
static int body_bad_root(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    static const char *bad[] = {"127.0.0.1:9000-8999", "127.0.0.1:9000-9100", "127.0.0.1:0-4",
                                "127.0.0.1:9000-", "127.0.0.1:-9000", "127.0.0.1:90000", "127.0.0.1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        terse_comm_params_t cp = {.rank = ctx->rank, .size = ctx->size, .root_addr = bad[i],
                                  .secret = ctx->secret, .transport = g_transport, .timeout_sec = 20};
        terse_comm_t *comm = NULL;
        double t0 = terse_launch_now();
        terse_status_t st = terse_comm_create(&cp, &comm);
        RCHECK(ctx, st == TERSE_ERR_INVALID_ARG && !comm, "'%s': got %s, want INVALID_ARG", bad[i],
               terse_strerror(st));
        RCHECK(ctx, terse_launch_now() - t0 < 2, "'%s' took %.1f s to refuse", bad[i], terse_launch_now() - t0);
    }
    return 0;
}

/* ---- a rank never shows up: creation times out after the start-up limit,
 * not the (longer) failure timeout ---------------------------------------- */
static int body_absent(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    if (ctx->rank == 2)
        return 0; /* never joins */
    terse_comm_t *comm = NULL;
    double t0 = terse_launch_now();
    terse_status_t st = mk_boot(ctx, 60, 2, NULL, &comm);
    double el = terse_launch_now() - t0;
    RCHECK(ctx, st == TERSE_ERR_TIMEOUT, "got %s, want TIMEOUT", terse_strerror(st));
    RCHECK(ctx, comm == NULL, "got a communicator");
    RCHECK(ctx, el < 6, "took %.1f s", el);
    return 0;
}

/* ---- a peer that destroyed its communicator is reported, not waited for -- */
static int body_departed(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *comm;
    RCHECK(ctx, mk(ctx, 30, NULL, &comm) == TERSE_OK, "create");
    int v = 1, s;
    RCHECK(ctx, terse_allreduce(comm, &v, &s, 1, TERSE_INT32, TERSE_SUM) == TERSE_OK, "first");
    if (ctx->rank == 0) {
        terse_comm_destroy(comm);
        return 0;
    }
    usleep(200000);
    double t0 = terse_launch_now();
    terse_status_t st = terse_allreduce(comm, &v, &s, 1, TERSE_INT32, TERSE_SUM);
    const char *detail;
    terse_comm_error(comm, &detail);
    RCHECK(ctx, st == TERSE_ERR_PEER_FAILED, "got %s (%s)", terse_strerror(st), detail);
    RCHECK(ctx, terse_launch_now() - t0 < 10, "took too long");
    terse_comm_destroy(comm);
    return 0;
}

/* ---- registration beyond the locked-memory limit (verbs) ----------------- */
static int body_memlock(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    struct rlimit rl = {64 << 10, 64 << 10};
    RCHECK(ctx, setrlimit(RLIMIT_MEMLOCK, &rl) == 0, "setrlimit");
    /* root ignores the limit through CAP_IPC_LOCK: give it up, as an
     * ordinary user would not have it */
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct caps[2];
    RCHECK(ctx, syscall(SYS_capget, &hdr, caps) == 0, "capget");
    caps[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
    caps[CAP_IPC_LOCK / 32].permitted &= ~(1u << (CAP_IPC_LOCK % 32));
    RCHECK(ctx, syscall(SYS_capset, &hdr, caps) == 0, "capset");
    terse_comm_t *comm = NULL;
    terse_status_t st = mk(ctx, 5, NULL, &comm);
    RCHECK(ctx, st == TERSE_ERR_MEMLOCK, "got %s, want MEMLOCK", terse_strerror(st));
    RCHECK(ctx, comm == NULL, "got a communicator");
    RCHECK(ctx, strstr(terse_strerror(st), "ulimit -l") != NULL, "message does not say what to raise");
    return 0;
}

/* ---- CUnit plumbing ----------------------------------------------------- */
static void expect_ok(int n, double limit, terse_rank_fn fn, void *arg, const char *what)
{
    int codes[8];
    int rc = terse_launch(n, limit, fn, arg, codes);
    if (rc < 0)
        return;
    for (int r = 0; r < n; r++)
        if (codes[r])
            fprintf(stderr, "  %s: rank %d exited with %d%s\n", what, r, codes[r],
                    codes[r] == TERSE_LAUNCH_TIMEOUT ? " (hung: killed by the launcher)" : "");
    CU_ASSERT_EQUAL(rc, 0);
}

static void t_kill3(void) { expect_ok(3, 60, body_kill, NULL, "kill 3"); }
static void t_kill5(void) { expect_ok(5, 60, body_kill, NULL, "kill 5"); }
static void t_silent(void) { expect_ok(4, 60, body_silent, NULL, "silent"); }
static void t_secret(void) { expect_ok(3, 40, body_secret, NULL, "secret"); }
static void t_absent(void) { expect_ok(3, 30, body_absent, NULL, "absent"); }
static void t_departed(void) { expect_ok(3, 30, body_departed, NULL, "departed"); }
static void t_busy_ports(void)
{
    int first;
    CU_ASSERT_EQUAL_FATAL(probe_range(&first), 0);
    expect_ok(4, 90, body_busy_ports, &first, "busy ports");
}
static void t_bad_root(void) { expect_ok(2, 30, body_bad_root, NULL, "bad root"); }
static void t_memlock(void) { expect_ok(1, 30, body_memlock, NULL, "memlock"); }
#define MM(name, k)                                                        \
    static void t_mm_##name(void)                                          \
    {                                                                      \
        mm_kind_t kind = k;                                                \
        expect_ok(3, 60, body_mismatch, &kind, "mismatch " #name);         \
        expect_ok(4, 60, body_mismatch, &kind, "mismatch " #name);         \
    }
MM(count, MM_COUNT)
MM(op, MM_OP)
MM(dtype, MM_DTYPE)
MM(coll, MM_COLL)
MM(seq, MM_SEQ)
MM(root, MM_ROOT)

int main(void)
{
    const char *list = getenv("TERSE_TEST_TRANSPORTS");
    static char buf[128];
    snprintf(buf, sizeof(buf), "%s", list && *list ? list : "tcp");
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    int failures = 0;
    for (char *save, *tp = strtok_r(buf, ",", &save); tp; tp = strtok_r(NULL, ",", &save)) {
        g_transport = tp;
        char name[64];
        snprintf(name, sizeof(name), "faults over %s", tp);
        CU_pSuite s = CU_add_suite(name, NULL, NULL);
        CU_add_test(s, "rank killed mid-allreduce (3 ranks)", t_kill3);
        CU_add_test(s, "rank killed mid-allreduce (5 ranks)", t_kill5);
        CU_add_test(s, "silent rank -> TERSE_TIMEOUT", t_silent);
        CU_add_test(s, "mismatched count", t_mm_count);
        CU_add_test(s, "mismatched op", t_mm_op);
        CU_add_test(s, "mismatched dtype", t_mm_dtype);
        CU_add_test(s, "mismatched collective", t_mm_coll);
        CU_add_test(s, "mismatched sequence (extra call)", t_mm_seq);
        CU_add_test(s, "mismatched broadcast root", t_mm_root);
        CU_add_test(s, "wrong job secret and stray connections", t_secret);
        CU_add_test(s, "rank never joins -> creation times out", t_absent);
        CU_add_test(s, "root port range: busy, silent and foreign ports skipped", t_busy_ports);
        CU_add_test(s, "malformed root address -> INVALID_ARG at once", t_bad_root);
        CU_add_test(s, "peer destroyed its communicator", t_departed);
        /* TCP registers nothing with the kernel: the limit only binds verbs */
        if (strcmp(tp, "verbs") == 0)
            CU_add_test(s, "locked-memory limit too low -> TERSE_ERR_MEMLOCK", t_memlock);
        CU_basic_run_suite(s);
        failures += (int)CU_get_number_of_tests_failed();
    }
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
