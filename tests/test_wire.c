/*
 * test_wire.c - malformed bytes on the wire. Rank 1 of a 2-rank job writes
 * crafted bytes straight into its TCP connection to rank 0 (below the
 * library), then rank 0 runs an allreduce: it must fail with
 * TERSE_ERR_PROTOCOL - never crash, hang, or write the bytes anywhere
 * outside its receive slots.
 */
#include "comm.h"
#include "launcher.h"
#include "tcp/tcp.h"
#include "testutil.h"

#include <CUnit/Basic.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef enum { W_GARBAGE, W_BAD_KEY, W_BAD_OFFSET, W_BAD_SLOT, W_BAD_HEADER, W_BAD_CREDIT, W_BAD_IMM } wire_case_t;

static void send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            poll(&pf, 1, 100);
            continue;
        }
        p += n;
        len -= (size_t)n;
    }
}

static void inject(terse_comm_t *comm, wire_case_t c)
{
    terse_ctx_t *ctx = comm->ctx;
    int fd = ctx->tp->peers[0].out_fd; /* opened by the good call */
    uint32_t slot = (uint32_t)(ctx->chans[0].sent % (uint64_t)ctx->nslots);
    uint64_t off = (uint64_t)slot * ctx->slot_stride; /* in rank 0's slots for this rank */
    char payload[TERSE_HDR_SIZE + 16];
    memset(payload, 0, sizeof(payload));
    tcp_frame_t f = {TERSE_TCP_MAGIC, TERSE_IMM(TERSE_IMM_DATA, slot), off, sizeof(payload), TERSE_TCP_SLOTS_KEY};
    switch (c) {
    case W_GARBAGE: {
        char junk[512];
        for (size_t i = 0; i < sizeof(junk); i++)
            junk[i] = (char)(i * 131 + 7);
        send_all(fd, junk, sizeof(junk));
        return;
    }
    case W_BAD_KEY: f.key = 999; break;
    case W_BAD_OFFSET: f.off = ctx->slots_len - 8; break;
    case W_BAD_SLOT: f.imm = TERSE_IMM(TERSE_IMM_DATA, slot + 1); break;
    case W_BAD_HEADER: memset(payload, 0xab, sizeof(payload)); break;
    case W_BAD_CREDIT: f.imm = TERSE_IMM(TERSE_IMM_CREDIT, 1000); f.len = 0; break;
    case W_BAD_IMM: f.imm = 7u << TERSE_IMM_VAL_BITS; f.len = 0; break;
    }
    send_all(fd, &f, sizeof(f));
    if (f.len)
        send_all(fd, payload, f.len);
}

static int body_wire(const terse_launch_ctx_t *ctx, void *arg)
{
    wire_case_t c = *(wire_case_t *)arg;
    terse_comm_t *comm;
    terse_comm_params_t p = {.rank = ctx->rank, .size = ctx->size, .root_addr = ctx->root,
                             .secret = ctx->secret, .transport = "tcp", .timeout_sec = 10};
    RCHECK(ctx, terse_comm_create(&p, &comm) == TERSE_OK, "create");
    float x[1000], y[1000];
    for (int i = 0; i < 1000; i++)
        x[i] = 1;
    RCHECK(ctx, terse_allreduce(comm, x, y, 1000, TERSE_FLOAT32, TERSE_SUM) == TERSE_OK, "good call");
    /* After the barrier rank 0 has finished the good call: the bytes below
     * can only hit the barrier (if rank 0 reads them together with our
     * barrier message) or the next call. */
    terse_status_t st = terse_barrier(comm);
    if (ctx->rank == 1) {
        RCHECK(ctx, st == TERSE_OK, "barrier: %s", terse_strerror(st));
        inject(comm, c);
        sleep(2); /* let rank 0 read it before our connection closes */
        terse_comm_destroy(comm);
        return 0;
    }
    memset(y, 0, sizeof(y));
    if (st == TERSE_OK)
        st = terse_allreduce(comm, x, y, 1000, TERSE_FLOAT32, TERSE_SUM);
    const char *detail;
    terse_comm_error(comm, &detail);
    RCHECK(ctx, st == TERSE_ERR_PROTOCOL, "case %d: got %s (%s), want PROTOCOL", (int)c, terse_strerror(st), detail);
    RCHECK(ctx, strstr(detail, "rank 1") != NULL, "detail '%s' does not name rank 1", detail);
    for (int i = 0; i < 1000; i++)
        RCHECK(ctx, x[i] == 1, "input buffer modified at %d", i);
    terse_comm_destroy(comm);
    return 0;
}

static void run(wire_case_t c)
{
    int codes[2];
    int rc = terse_launch(2, 30, body_wire, &c, codes);
    if (rc < 0)
        return;
    for (int r = 0; r < 2; r++)
        if (codes[r])
            fprintf(stderr, "  case %d: rank %d exited with %d\n", (int)c, r, codes[r]);
    CU_ASSERT_EQUAL(rc, 0);
}

static void t_garbage(void) { run(W_GARBAGE); }
static void t_key(void) { run(W_BAD_KEY); }
static void t_offset(void) { run(W_BAD_OFFSET); }
static void t_slot(void) { run(W_BAD_SLOT); }
static void t_header(void) { run(W_BAD_HEADER); }
static void t_credit(void) { run(W_BAD_CREDIT); }
static void t_imm(void) { run(W_BAD_IMM); }

int main(void)
{
    int xr, xs;
    if (terse_launch_external(&xr, &xs)) {
        printf("SKIP: test_wire forks its own ranks; run it without mpirun\n");
        return 77;
    }
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite s = CU_add_suite("malformed bytes on the wire (tcp)", NULL, NULL);
    CU_add_test(s, "random bytes instead of a frame", t_garbage);
    CU_add_test(s, "frame for an unknown memory key", t_key);
    CU_add_test(s, "frame past the end of the region", t_offset);
    CU_add_test(s, "chunk in the wrong slot", t_slot);
    CU_add_test(s, "chunk with a corrupt header", t_header);
    CU_add_test(s, "more credits than outstanding", t_credit);
    CU_add_test(s, "unknown notification type", t_imm);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failures = (int)CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
