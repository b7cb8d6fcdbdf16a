/**
 * terse.h - the one public header of terse, collective communication over
 * RDMA verbs and TCP.
 *
 * Conventions
 *  - Every call returns a terse_status_t; the library never aborts or exits.
 *  - Handles are opaque and come in strict pairs (create/destroy,
 *    start/wait).
 *  - Parameter structs treat zero as "use the default / the environment".
 *  - A communicator that saw a transport, timeout or mismatch error keeps that
 *    error ("sticky"): every later call on it returns the same status and
 *    terse_comm_error() explains who failed and why.
 *  - Collective calls must be made by every rank in the same order with the
 *    same count, dtype, op and root; a disagreement is detected and returned
 *    as TERSE_ERR_MISMATCH on every rank that takes part.
 *
 * Threads
 *  - Progress is made by the calling thread inside terse calls (blocking calls,
 *    terse_request_test, terse_request_wait) or, with a progress thread
 *    (TERSE_PROGRESS_THREAD=1 or terse_comm_params_t.progress_thread), also by
 *    that thread whenever requests are in flight, so they advance while the
 *    caller computes. It sleeps in the transport between events and not at
 *    all when nothing is in flight.
 *  - The contract is MPI_THREAD_SERIALIZED per context: all communicators
 *    derived from one world share its context; the caller's threads may use
 *    them from any thread, one call at a time (a call on one returns before
 *    another on the same context starts). Different worlds (contexts) are
 *    independent. The progress thread synchronizes with the caller itself
 *    (scripts/sanitize.sh KIND=thread runs it under ThreadSanitizer).
 *  - Completion is seen by the caller: a request ended by the progress thread
 *    stays "active" until terse_request_wait or a terse_request_test that
 *    reports it done - until then a plan cannot be restarted or freed and a
 *    compressed or sparse handle is busy (TERSE_ERR_BUSY), whoever drove it.
 *  - on_done work (decoding a compressed step, its error feedback) runs in
 *    whichever thread drives progress; buffers handed to a request belong to
 *    terse until the caller has seen it complete.
 */
#ifndef TERSE_H
#define TERSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TERSE_API __attribute__((visibility("default")))
#else
#define TERSE_API
#endif

#define TERSE_VERSION_MAJOR 0
#define TERSE_VERSION_MINOR 2
#define TERSE_VERSION_PATCH 0

/*
 * X-macro list of statuses: (name, value, message). One list generates the
 * enum and terse_strerror(), so they cannot drift apart. The message says
 * whose fault the error is.
 */
#define TERSE_STATUS_LIST(X)                                                  \
    X(TERSE_OK, 0, "success")                                                 \
    X(TERSE_IN_PROGRESS, 1, "operation in progress")                          \
    X(TERSE_ERR_INVALID_ARG, -1, "invalid argument (caller error)")           \
    X(TERSE_ERR_NO_MEMORY, -2, "out of memory (system)")                      \
    X(TERSE_ERR_UNSUPPORTED, -3, "operation or transport not supported")      \
    X(TERSE_ERR_SYSTEM, -4, "system call failed (system)")                    \
    X(TERSE_ERR_TIMEOUT, -5, "timed out waiting for a peer (remote)")         \
    X(TERSE_ERR_PEER_FAILED, -6, "connection to a peer lost (remote)")        \
    X(TERSE_ERR_MISMATCH, -7,                                                 \
      "ranks called mismatched collectives (caller error)")                   \
    X(TERSE_ERR_PROTOCOL, -8, "malformed data on the wire (remote)")          \
    X(TERSE_ERR_AUTH, -9, "peer rejected: wrong job secret or identity")      \
    X(TERSE_ERR_REMOTE_ABORT, -10, "another rank reported an error (remote)") \
    X(TERSE_ERR_MEMLOCK, -11,                                                 \
      "cannot lock memory for registration: raise ulimit -l (system)")        \
    X(TERSE_ERR_NO_DEVICE, -12, "no usable network device (system)")         \
    X(TERSE_ERR_BUSY, -13, "communicator busy: requests still pending")

#define TERSE_STATUS_ENUM_(name, value, msg) name = value,
typedef enum terse_status { TERSE_STATUS_LIST(TERSE_STATUS_ENUM_) } terse_status_t;
#undef TERSE_STATUS_ENUM_

/** Static message for a status; never NULL (unknown values get a generic text). */
TERSE_API const char *terse_strerror(terse_status_t status);

/** Element types. 16-bit floats are reduced in float32 and rounded to nearest even. */
typedef enum terse_dtype {
    TERSE_FLOAT32 = 0,
    TERSE_FLOAT64,
    TERSE_FLOAT16,
    TERSE_BFLOAT16,
    TERSE_INT32,
    TERSE_INT64,
    TERSE_DTYPE_COUNT
} terse_dtype_t;

/** Reduction operators. AVG divides the sum by the rank count (integers truncate). */
typedef enum terse_op {
    TERSE_SUM = 0,
    TERSE_PROD,
    TERSE_MIN,
    TERSE_MAX,
    TERSE_AVG,
    TERSE_OP_COUNT
} terse_op_t;

/** Size in bytes of one element, or 0 for an invalid dtype. */
TERSE_API size_t terse_dtype_size(terse_dtype_t dtype);
/** Short names ("float32", "sum"); "invalid" when out of range. */
TERSE_API const char *terse_dtype_name(terse_dtype_t dtype);
TERSE_API const char *terse_op_name(terse_op_t op);

typedef struct terse_comm terse_comm_t;
typedef struct terse_request terse_request_t;

/**
 * Out-of-band allgather (UCC's ucc_oob_coll shape), for jobs whose launcher
 * or framework already connects the ranks (MPI, a PyTorch Store, PMIx): terse
 * then runs its start-up exchange through it instead of its own TCP
 * rendezvous. allgather starts an exchange of len bytes per rank - rbuf[r *
 * len ...] receives rank r's sbuf - and sets *request; req_test returns
 * TERSE_OK once it completed, TERSE_IN_PROGRESS before, or an error;
 * req_free releases the request. n_oob_eps ranks take part, this one being
 * oob_ep. The hook is called only inside terse_comm_create, from its thread.
 */
typedef struct terse_oob_coll {
    terse_status_t (*allgather)(void *sbuf, void *rbuf, size_t len, void *coll_info, void **request);
    terse_status_t (*req_test)(void *request);
    terse_status_t (*req_free)(void *request);
    void *coll_info;
    int n_oob_eps;
    int oob_ep;
} terse_oob_coll_t;

/**
 * Communicator parameters. Zero (or NULL) in a field means "take it from the
 * environment, else the default". API values override the environment.
 *  - struct_size: sizeof(terse_comm_params_t) as the caller was compiled
 *    (terse_comm_params_init or TERSE_COMM_PARAMS_INIT set it); later
 *    versions append fields and read only what the caller's struct holds.
 *    0 means the layout of this header.
 *  - size == 0: rank and size come from the launcher's environment
 *    (TERSE_RANK/TERSE_SIZE, OMPI_COMM_WORLD_*, PMI_*, SLURM_PROCID/NTASKS,
 *    RANK/WORLD_SIZE), in that order of preference.
 *  - root_addr: "host:port" of rank 0's rendezvous listener, or
 *    "host:first-last": rank 0 takes the first free port of the range and
 *    the others find it (TERSE_ROOT_ADDR, else MASTER_ADDR:MASTER_PORT,
 *    else 127.0.0.1 with 8 ports derived from the job id).
 *  - secret: per-job secret; connections that do not present it are rejected
 *    (TERSE_SECRET, else derived from the launcher's job id; with an oob hook,
 *    drawn at random and agreed through it).
 *  - transport: "tcp", "verbs" or "auto" (TERSE_TRANSPORT).
 *  - timeout_sec: how long to wait for a silent peer (TERSE_TIMEOUT).
 *  - oob: when oob.allgather is set, rank and size are oob_ep / n_oob_eps
 *    and the start-up exchange goes through the hook (no root address).
 *  - host_id: this process's host identity for node awareness
 *    (TERSE_HOST_ID; default the boot id and host name).
 *  - boot_timeout_sec: how long creation waits for every rank to join
 *    (TERSE_BOOT_TIMEOUT; default timeout_sec). Launchers start ranks
 *    seconds apart, so a short timeout for failure detection need not
 *    make start-up fail.
 *  - progress_thread: 1 runs a progress thread per context (so requests
 *    advance while the caller computes without calling terse), -1 never,
 *    0 as TERSE_PROGRESS_THREAD says (default off). See "Threads" above.
 */
typedef struct terse_comm_params {
    size_t struct_size;
    int rank;
    int size;
    const char *root_addr;
    const char *secret;
    const char *transport;
    double timeout_sec;
    terse_oob_coll_t oob;
    const char *host_id;
    double boot_timeout_sec;
    int progress_thread;
} terse_comm_params_t;

#define TERSE_COMM_PARAMS_INIT {sizeof(terse_comm_params_t), 0, 0, NULL, NULL, NULL, 0, {0}, NULL, 0, 0}

/** Zero every field and set struct_size. */
TERSE_API void terse_comm_params_init(terse_comm_params_t *params);

/**
 * Create a world communicator. Collective over all `size` ranks: blocks
 * until every rank has joined or the timeout expires. On success *comm is
 * owned by the caller and must be released with terse_comm_destroy().
 * Returns TERSE_ERR_INVALID_ARG, TERSE_ERR_TIMEOUT, TERSE_ERR_AUTH,
 * TERSE_ERR_SYSTEM, TERSE_ERR_NO_MEMORY.
 *
 * The world communicator owns the process's context: the transport
 * endpoint, one connection per peer, registered memory, the host table.
 * Every communicator derived from it (split, dup, create_group,
 * split_type, shrink) shares that context - no new rendezvous, listener or
 * connection - and its traffic is told apart on the wire by a communicator
 * id. Communicators may be destroyed in any order (the parent before its
 * children too): the context lives until the last one is destroyed.
 */
TERSE_API terse_status_t terse_comm_create(const terse_comm_params_t *params,
                                           terse_comm_t **comm);

/** Same as terse_comm_create(NULL, comm): everything from the environment. */
TERSE_API terse_status_t terse_comm_create_from_env(terse_comm_t **comm);

/**
 * Release a communicator. Local (not collective). Pending requests on it are
 * cancelled and their handles become invalid; other communicators over the
 * same context are not disturbed. The last communicator of a context closes
 * the connections (peers then see this process leave).
 */
TERSE_API terse_status_t terse_comm_destroy(terse_comm_t *comm);

TERSE_API int terse_comm_rank(const terse_comm_t *comm);
TERSE_API int terse_comm_size(const terse_comm_t *comm);

/*
 * Communicators from communicators (MPI's semantics). Each call is
 * collective over comm - every rank calls it, in the same order as its other
 * collectives on comm - except terse_comm_create_group, which only the
 * listed ranks call. New communicators share comm's context and connections.
 * A rank that gets no communicator receives *newcomm = NULL.
 */
#define TERSE_UNDEFINED (-32766)

/** Ranks with the same color (>= 0) form a communicator, ordered by key, then
 * by rank in comm; color TERSE_UNDEFINED takes part but gets NULL. A negative
 * color other than that is TERSE_ERR_INVALID_ARG on every rank. */
TERSE_API terse_status_t terse_comm_split(terse_comm_t *comm, int color, int key,
                                          terse_comm_t **newcomm);
/** Same ranks in the same order, a separate communication space. */
TERSE_API terse_status_t terse_comm_dup(terse_comm_t *comm, terse_comm_t **newcomm);
/** The ranks[0..nranks) of comm, in that order; called by those ranks only.
 * Duplicates, out-of-range ranks or a caller not in the list are
 * TERSE_ERR_INVALID_ARG (and no communication). */
TERSE_API terse_status_t terse_comm_create_group(terse_comm_t *comm, int nranks, const int *ranks,
                                                 terse_comm_t **newcomm);

typedef enum terse_split_type {
    TERSE_SPLIT_NODE = 1 /* ranks on the same host (MPI_COMM_TYPE_SHARED) */
} terse_split_type_t;

/** Split by locality: TERSE_SPLIT_NODE groups the ranks whose host identity
 * matches (TERSE_HOST_ID fakes hosts for tests), ordered by key then rank. */
TERSE_API terse_status_t terse_comm_split_type(terse_comm_t *comm, int type, int key,
                                               terse_comm_t **newcomm);

/** This rank's index among the ranks of comm on its host, and their number. */
TERSE_API int terse_comm_local_rank(const terse_comm_t *comm);
TERSE_API int terse_comm_local_size(const terse_comm_t *comm);
/** Number of distinct hosts among comm's ranks. */
TERSE_API int terse_comm_node_count(const terse_comm_t *comm);

/**
 * After a collective on comm failed with TERSE_ERR_PEER_FAILED (or
 * TERSE_ERR_TIMEOUT): collective over the ranks still alive, which agree on
 * who they are and get a communicator of those ranks, in comm's order
 * (ULFM's MPI_Comm_shrink). Ranks that are excluded - dead, or merely stopped
 * beyond the timeout - are cut off: a rank that comes back gets an error,
 * never data. comm keeps its error; destroy it when done. A further failure
 * during the shrink itself returns TERSE_ERR_PEER_FAILED (call it again).
 */
TERSE_API terse_status_t terse_comm_shrink(terse_comm_t *comm, terse_comm_t **newcomm);

/** Name of the transport in use ("tcp", "verbs"). */
TERSE_API const char *terse_comm_transport(const terse_comm_t *comm);

/**
 * The sticky error of the communicator (TERSE_OK if none) and, in *detail, a
 * human-readable description naming the peer involved. *detail stays valid
 * until the communicator is destroyed. detail may be NULL.
 */
TERSE_API terse_status_t terse_comm_error(const terse_comm_t *comm, const char **detail);

/*
 * Collectives. Buffers are host memory owned by the caller; terse only reads
 * sendbuf and writes recvbuf during the call (or until the request completes).
 * In-place operation: pass the same pointer as sendbuf and recvbuf.
 * count == 0 is valid and still synchronises sequence numbers.
 */

/** recvbuf[i] = op over ranks of sendbuf[i], i < count. Bit-identical on every rank. */
TERSE_API terse_status_t terse_allreduce(terse_comm_t *comm, const void *sendbuf, void *recvbuf,
                                         size_t count, terse_dtype_t dtype, terse_op_t op);

/**
 * sendbuf holds size*recvcount elements; rank r receives the reduction of
 * block r. In-place: recvbuf == sendbuf + rank*recvcount elements, or pass the
 * same pointer for both (the result then lands at the start of the buffer).
 */
TERSE_API terse_status_t terse_reduce_scatter(terse_comm_t *comm, const void *sendbuf,
                                              void *recvbuf, size_t recvcount,
                                              terse_dtype_t dtype, terse_op_t op);

/** recvbuf (size*sendcount elements) = concatenation of every rank's sendbuf. */
TERSE_API terse_status_t terse_allgather(terse_comm_t *comm, const void *sendbuf, void *recvbuf,
                                         size_t sendcount, terse_dtype_t dtype);

/**
 * Variable-size allgather: rank r contributes recvcounts[r] elements, placed at
 * recvbuf + displs[r] elements. recvcounts/displs must be equal on all ranks;
 * sendcount must equal recvcounts[rank]. displs == NULL means packed.
 */
TERSE_API terse_status_t terse_allgatherv(terse_comm_t *comm, const void *sendbuf,
                                          size_t sendcount, void *recvbuf,
                                          const size_t *recvcounts, const size_t *displs,
                                          terse_dtype_t dtype);

/** Copy count elements from root's sendbuf to every rank's recvbuf. */
TERSE_API terse_status_t terse_broadcast(terse_comm_t *comm, const void *sendbuf, void *recvbuf,
                                         size_t count, terse_dtype_t dtype, int root);

/** Returns once every rank has entered the barrier. */
TERSE_API terse_status_t terse_barrier(terse_comm_t *comm);

/*
 * Non-blocking variants. *req is owned by the caller until terse_request_wait
 * returns (which releases it) or terse_request_free. Requests complete in the
 * order they were started. Buffers must stay valid and untouched until then.
 */
TERSE_API terse_status_t terse_allreduce_start(terse_comm_t *comm, const void *sendbuf,
                                               void *recvbuf, size_t count, terse_dtype_t dtype,
                                               terse_op_t op, terse_request_t **req);
TERSE_API terse_status_t terse_reduce_scatter_start(terse_comm_t *comm, const void *sendbuf,
                                                    void *recvbuf, size_t recvcount,
                                                    terse_dtype_t dtype, terse_op_t op,
                                                    terse_request_t **req);
TERSE_API terse_status_t terse_allgather_start(terse_comm_t *comm, const void *sendbuf,
                                               void *recvbuf, size_t sendcount,
                                               terse_dtype_t dtype, terse_request_t **req);
TERSE_API terse_status_t terse_broadcast_start(terse_comm_t *comm, const void *sendbuf,
                                               void *recvbuf, size_t count, terse_dtype_t dtype,
                                               int root, terse_request_t **req);

/** recvbuf at root = op over ranks of sendbuf (recvbuf is ignored elsewhere);
 * in place at the root with sendbuf == recvbuf. Binomial tree, pipelined. */
TERSE_API terse_status_t terse_reduce(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                                      terse_dtype_t dtype, terse_op_t op, int root);
TERSE_API terse_status_t terse_reduce_start(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                                            terse_dtype_t dtype, terse_op_t op, int root, terse_request_t **req);

/**
 * All-to-all: block p of sendbuf (count elements) goes to rank p, block q of
 * recvbuf comes from rank q. In place (sendbuf == recvbuf) is allowed. The v
 * form has per-rank counts and displacements (in elements; NULL displs:
 * packed); what rank a sends rank b must be what b expects from a, or both
 * get TERSE_ERR_MISMATCH.
 */
TERSE_API terse_status_t terse_alltoall(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                                        terse_dtype_t dtype);
TERSE_API terse_status_t terse_alltoall_start(terse_comm_t *comm, const void *sendbuf, void *recvbuf,
                                              size_t count, terse_dtype_t dtype, terse_request_t **req);
TERSE_API terse_status_t terse_alltoallv(terse_comm_t *comm, const void *sendbuf, const size_t *sendcounts,
                                         const size_t *sdispls, void *recvbuf, const size_t *recvcounts,
                                         const size_t *rdispls, terse_dtype_t dtype);
TERSE_API terse_status_t terse_alltoallv_start(terse_comm_t *comm, const void *sendbuf, const size_t *sendcounts,
                                               const size_t *sdispls, void *recvbuf, const size_t *recvcounts,
                                               const size_t *rdispls, terse_dtype_t dtype, terse_request_t **req);

/*
 * Persistent collectives (MPI-4 style): built once - schedule, peer lists,
 * registrations - and started many times on the buffers' contents of each
 * start. terse_start runs the plan (TERSE_ERR_BUSY while it still runs);
 * terse_request_test / terse_request_wait complete a start and keep the
 * plan; terse_request_free releases it (TERSE_ERR_BUSY while running).
 * Plans are collective like the calls they stand for: every rank starts its
 * plans in the same order as its other collectives. Destroying the
 * communicator releases its plans.
 */
TERSE_API terse_status_t terse_allreduce_init(terse_comm_t *comm, const void *sendbuf, void *recvbuf,
                                              size_t count, terse_dtype_t dtype, terse_op_t op,
                                              terse_request_t **req);
TERSE_API terse_status_t terse_reduce_scatter_init(terse_comm_t *comm, const void *sendbuf, void *recvbuf,
                                                   size_t recvcount, terse_dtype_t dtype, terse_op_t op,
                                                   terse_request_t **req);
TERSE_API terse_status_t terse_allgather_init(terse_comm_t *comm, const void *sendbuf, void *recvbuf,
                                              size_t sendcount, terse_dtype_t dtype, terse_request_t **req);
TERSE_API terse_status_t terse_broadcast_init(terse_comm_t *comm, const void *sendbuf, void *recvbuf,
                                              size_t count, terse_dtype_t dtype, int root, terse_request_t **req);
TERSE_API terse_status_t terse_reduce_init(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                                           terse_dtype_t dtype, terse_op_t op, int root, terse_request_t **req);
TERSE_API terse_status_t terse_alltoall_init(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                                             terse_dtype_t dtype, terse_request_t **req);
TERSE_API terse_status_t terse_start(terse_request_t *req);

/**
 * Make progress; *done = 1 when the request finished (its status is then
 * returned, and the request must still be released with wait or free).
 * Returns TERSE_IN_PROGRESS with *done = 0 while running.
 */
TERSE_API terse_status_t terse_request_test(terse_request_t *req, int *done);
/** Block until the request completes, then release it (a plan is kept). Returns its status. */
TERSE_API terse_status_t terse_request_wait(terse_request_t *req);
/** Release a completed request without waiting; TERSE_ERR_BUSY if still running. */
TERSE_API terse_status_t terse_request_free(terse_request_t *req);

/*
 * Memory registration (zero-copy).
 *
 * Over verbs, a chunk sent from memory the NIC does not know is first copied
 * into a registered bounce buffer. Registering a buffer lets terse RDMA-write
 * straight from it. Ownership: the caller keeps owning the memory; it must
 * stay allocated and mapped until terse_mem_deregister() returns (freeing or
 * unmapping registered memory first is undefined behaviour, as with
 * ibv_reg_mr). A registration covers every call whose buffer lies inside
 * [buf, buf + len), on every communicator of the same context (the world it
 * was made on and all derived from it), and is released with the context
 * (when its last communicator is destroyed) if not before. Over TCP registration is accepted and costs
 * nothing.
 *
 * With TERSE_REG_CACHE=1 terse also registers the buffers of large calls by
 * itself and keeps them cached (bounded, least recently used first); the
 * caller must then call terse_mem_release() before freeing or unmapping such
 * a buffer, since terse cannot see the memory go away.
 */
typedef struct terse_memreg terse_memreg_t;

/** Register [buf, buf+len). TERSE_ERR_MEMLOCK when the locked-memory limit is too low. */
TERSE_API terse_status_t terse_mem_register(terse_comm_t *comm, void *buf, size_t len,
                                            terse_memreg_t **reg);
/** Undo terse_mem_register. TERSE_ERR_BUSY while a pending request uses it. */
TERSE_API terse_status_t terse_mem_deregister(terse_comm_t *comm, terse_memreg_t *reg);
/** Drop cached automatic registrations overlapping [buf, buf+len) (TERSE_REG_CACHE=1). */
TERSE_API terse_status_t terse_mem_release(terse_comm_t *comm, const void *buf, size_t len);

/** Counters of a communicator (cumulative) and of its context (now). */
typedef struct terse_comm_stats {
    uint64_t calls;            /* collectives started */
    uint64_t bytes_sent;       /* payload bytes written to peers */
    uint64_t chunks_placed;    /* received straight into user memory (TCP placement) */
    uint64_t chunks_slotted;   /* received through a receive slot */
    uint64_t reg_created;      /* memory registrations made (explicit + cache misses) */
    uint64_t reg_hits;         /* chunks sent from registered memory (zero-copy) */
    uint64_t reg_misses;       /* chunks sent from unregistered memory (bounce copy on verbs) */
    /* of the context (shared with every communicator over it): */
    uint64_t connections;      /* open now (TCP opens them on first use; one per direction) */
    uint64_t pinned_bytes;     /* memory registered with the RDMA device (0 on TCP) */
    uint64_t parked_bytes;     /* received chunks parked off their slots now (TERSE_STASH_LIMIT) */
} terse_comm_stats_t;

TERSE_API terse_status_t terse_comm_stats(const terse_comm_t *comm, terse_comm_stats_t *stats);

/*
 * Persistent compressed allreduce of float32 tensors.
 *
 * Created once per tensor (or bucket of tensors packed in one buffer) and
 * run every step: it holds the state of the compression method - worker
 * error-feedback residual e, the owner-side ("server") residual of the chunk
 * this rank owns, the random streams, step counter and statistics - so the
 * caller only passes each step's update. Per call, with u the input:
 *   p = u + e;  send C(p);  e <- p - decode(C(p))        (worker feedback)
 * and the output, identical to the last bit on every rank, is the sum (or
 * mean) of the decoded contributions, re-compressed by each chunk's owner in
 * the two-phase and ring algorithms (with its own residual when
 * server_error_feedback is set). Codecs (params.codec / server_codec):
 *   "fp32"  no compression;  "fp16", "bf16"  16-bit floats;
 *   "cnat8" natural compression (1 byte per value, unbiased, omega 1/8);
 *   "cnat9" natural compression, 9 bits per value (sign + full exponent);
 *   "natdither" natural dithering (levels, norm, bucket);
 *   "qsgd"  standard random dithering with `levels` uniform levels;
 *   "sign"  scaled sign (biased: use error feedback);
 *   "sign1" unbiased stochastic 1-bit (scale = max |x| per bucket);
 *   "topk"  k = max(1, floor(ratio n)) largest magnitudes (biased);
 *   "randk" k random entries scaled by n/k, shared seed (unbiased);
 *   "topk+cnat8", "randk+cnat8": C_nat on the kept values.
 * Algorithms: allgather of codes (every rank decodes all codes: one
 * compression, best for small rank counts and for biased codecs), two-phase
 * (each chunk compressed to its owner, summed there, re-compressed and
 * allgathered: 2 (n-1)/n of the code per rank), ring (reduce-scatter that
 * decodes, adds and re-compresses at every hop; unbiased codecs only, no
 * worker feedback). AUTO: allgather for biased codecs, n <= 2 and tensors
 * below TERSE_COMPRESSED_THRESHOLD (1 MiB), two-phase otherwise;
 * TERSE_COMPRESSED_ALGO overrides AUTO.
 */
typedef struct terse_compressed terse_compressed_t;

typedef enum terse_compressed_algo {
    TERSE_COMPRESSED_AUTO = 0,
    TERSE_COMPRESSED_ALLGATHER,
    TERSE_COMPRESSED_TWO_PHASE,
    TERSE_COMPRESSED_RING
} terse_compressed_algo_t;

typedef struct terse_compressed_params {
    size_t struct_size;         /* set by terse_compressed_params_init (the struct can grow) */
    const char *codec;          /* see above; default "cnat8" */
    const char *server_codec;   /* owner re-compression; NULL: same as codec */
    double ratio;               /* topk / randk density in (0, 1]; default 0.01 */
    int levels;                 /* natdither: s (levels 2^(1-s)..1); qsgd: levels; default 8 */
    int norm;                   /* natdither / qsgd: p of the p-norm, 0 = max norm; default 2 */
    size_t bucket;              /* values per norm (natdither, qsgd, sign1); 0 = 512 */
    int error_feedback;         /* keep the worker residual e (default 1) */
    int server_error_feedback;  /* owner keeps a downlink residual (two-phase, ring) */
    int error_average_every;    /* H > 0: every H calls, e <- mean of all ranks' e */
    terse_op_t op;              /* TERSE_SUM or TERSE_AVG (default) */
    terse_compressed_algo_t algo;
    uint64_t seed;              /* random streams: per rank from this seed */
} terse_compressed_params_t;

/** Defaults listed above. */
TERSE_API void terse_compressed_params_init(terse_compressed_params_t *params);

/**
 * Create a compressed allreduce of `count` float32 values on comm. Local (no
 * communication): ranks must pass the same count and parameters, which the
 * first call checks (TERSE_ERR_MISMATCH). TERSE_ERR_INVALID_ARG names the bad
 * field in the debug log (TERSE_DEBUG=warn).
 */
TERSE_API terse_status_t terse_compressed_create(terse_comm_t *comm, size_t count,
                                                 const terse_compressed_params_t *params,
                                                 terse_compressed_t **out);
/** Release the handle (a step in flight is waited for first). */
TERSE_API void terse_compressed_destroy(terse_compressed_t *c);

/**
 * One step: recvbuf = sum (or mean) of every rank's compressed sendbuf, with
 * feedback. sendbuf may equal recvbuf. Blocking; collective. On error the
 * state is left as it was before the call (the communicator's sticky error
 * applies as for any collective).
 */
TERSE_API terse_status_t terse_compressed_allreduce(terse_compressed_t *c, const float *sendbuf,
                                                    float *recvbuf);

/**
 * The same step, non-blocking: *req completes with terse_request_test /
 * wait (recvbuf is written when it completes; sendbuf must stay untouched
 * until then). Steps of several handles may be in flight at once, mixed with
 * any other requests (issue order is the only ordering rule); one step per
 * handle at a time (TERSE_ERR_BUSY), and save, load and scale_residual wait
 * for it (TERSE_ERR_BUSY). A step that fails or is cancelled leaves the
 * handle's state as it was.
 */
TERSE_API terse_status_t terse_compressed_allreduce_start(terse_compressed_t *c, const float *sendbuf,
                                                          float *recvbuf, terse_request_t **req);

/** Step-ahead point y = x - e (y may equal x): with e in parameter units, the
 * gradient for the next step is evaluated at y. */
TERSE_API terse_status_t terse_compressed_step_ahead(const terse_compressed_t *c, const float *x,
                                                     float *y);
/** Multiply the residuals (worker and server) by factor, e.g. lr_new / lr_old. */
TERSE_API terse_status_t terse_compressed_scale_residual(terse_compressed_t *c, float factor);
/** Copy the worker residual e (count floats) into out. */
TERSE_API terse_status_t terse_compressed_residual(const terse_compressed_t *c, float *out);

typedef struct terse_compressed_stats {
    uint64_t steps;             /* calls completed */
    uint64_t error_averages;    /* residual averaging rounds done */
    uint64_t bytes_sent;        /* payload bytes this rank sent in the last call */
    uint64_t bytes_sent_total;  /* ... in all calls (error averaging included) */
    uint64_t dense_bytes;       /* what a dense ring allreduce sends per call, per rank */
    double ratio;               /* bytes_sent_total / (steps * dense_bytes) */
    double residual_norm;       /* ||e||_2 after the last call */
    double server_residual_norm;/* ||server residual||_2 of the owned chunk */
    const char *algorithm;      /* "allgather", "two_phase", "ring" */
    const char *codec;          /* canonical codec name */
} terse_compressed_stats_t;

TERSE_API terse_status_t terse_compressed_stats(const terse_compressed_t *c,
                                                terse_compressed_stats_t *stats);

/**
 * Checkpoint: the whole state (residuals, counters, random streams,
 * statistics) in a versioned, self-checking byte format. A handle created
 * with the same comm size, rank, count and parameters resumes bit-exactly
 * from it; anything else is refused with TERSE_ERR_INVALID_ARG.
 */
TERSE_API size_t terse_compressed_state_size(const terse_compressed_t *c);
TERSE_API terse_status_t terse_compressed_save(const terse_compressed_t *c, void *buf, size_t len);
TERSE_API terse_status_t terse_compressed_load(terse_compressed_t *c, const void *buf, size_t len);

/*
 * Top-k selection by magnitude: the k largest |x_i|, ties to the lower index,
 * indices ascending. sampled = 1 estimates a threshold from a sample, scans
 * once for candidates and selects exactly among them (same result as the
 * exact selection, much faster for k << n). The bucket form selects per
 * tensor: tensor t is x[offsets[t] .. offsets[t+1]), k_t = max(1, floor(ratio
 * n_t)); idx gets global indices, *k_out their number.
 */
TERSE_API size_t terse_topk_count(size_t n, double ratio);
TERSE_API terse_status_t terse_topk_select(const float *x, size_t n, size_t k, int sampled,
                                           uint32_t *idx);
TERSE_API terse_status_t terse_topk_select_bucket(const float *x, const size_t *offsets,
                                                  int ntensors, double ratio, int sampled,
                                                  uint32_t *idx, size_t *k_out);

/*
 * Sparse allgather over a vector of n floats: every rank contributes k
 * (index, value) pairs, k its own and different per call; sizes travel with
 * the data (no extra round trip). Indices go delta- and varint-coded, values
 * as float32 (lossless), float16 or C_nat. Input rules, the same on every
 * rank: k <= n, indices < n, finite values - otherwise every rank returns
 * TERSE_ERR_INVALID_ARG and the communicator stays usable; unsorted indices
 * are sorted (stable) and duplicates kept (accumulate mode adds them).
 * Results are identical to the bit on every rank.
 */
typedef struct terse_sparse terse_sparse_t;

typedef enum terse_sparse_values {
    TERSE_SPARSE_FP32 = 0, /* lossless */
    TERSE_SPARSE_FP16,     /* round to nearest even, saturating at 65504 */
    TERSE_SPARSE_CNAT8     /* natural compression, unbiased */
} terse_sparse_values_t;

typedef struct terse_sparse_params {
    size_t struct_size;           /* set by terse_sparse_params_init (the struct can grow) */
    terse_sparse_values_t values; /* default FP32 */
    int dense_switch;             /* accumulate mode: send the dense vector when it is
                                   * smaller than the list (SparCML's switch); default 1 */
    uint64_t seed;                /* C_nat rounding stream */
} terse_sparse_params_t;

TERSE_API void terse_sparse_params_init(terse_sparse_params_t *params);
/** Local; ranks must agree on n and the parameters (checked at the first call). */
TERSE_API terse_status_t terse_sparse_create(terse_comm_t *comm, size_t n,
                                             const terse_sparse_params_t *params,
                                             terse_sparse_t **out);
TERSE_API void terse_sparse_destroy(terse_sparse_t *s);

/** Concatenated lists: rank r's pairs are idx/val[offsets[r] .. offsets[r] + counts[r]),
 * ascending by index. Memory owned by the handle, valid until its next call. */
typedef struct terse_sparse_list {
    size_t total;
    const size_t *counts, *offsets; /* [comm size] */
    const uint32_t *idx;
    const float *val;
} terse_sparse_list_t;

TERSE_API terse_status_t terse_sparse_allgather(terse_sparse_t *s, const uint32_t *idx,
                                                const float *val, size_t k,
                                                terse_sparse_list_t *out);
/** Accumulate mode: out[0..n) = sum over ranks of their pairs (duplicates added),
 * summed in rank order. out may not overlap the inputs. */
TERSE_API terse_status_t terse_sparse_allreduce(terse_sparse_t *s, const uint32_t *idx,
                                                const float *val, size_t k, float *out);

/* Non-blocking forms: the input is encoded during the call (idx and val may be
 * reused at once); out (the list, or the vector) is written when *req
 * completes. One call per handle in flight (TERSE_ERR_BUSY); a failed call
 * leaves the handle's random stream as it was. */
TERSE_API terse_status_t terse_sparse_allgather_start(terse_sparse_t *s, const uint32_t *idx, const float *val,
                                                      size_t k, terse_sparse_list_t *out, terse_request_t **req);
TERSE_API terse_status_t terse_sparse_allreduce_start(terse_sparse_t *s, const uint32_t *idx, const float *val,
                                                      size_t k, float *out, terse_request_t **req);

typedef struct terse_sparse_stats {
    uint64_t calls, bytes_sent, dense_sends; /* this rank */
} terse_sparse_stats_t;
TERSE_API terse_status_t terse_sparse_stats(const terse_sparse_t *s, terse_sparse_stats_t *stats);

/*
 * SASG: sparse communication with adaptive aggregated gradients (Deng et al.).
 * Persistent over a parameter vector of n floats. Per step k each rank either
 * uploads s_m = TopK(lr * grad + e_m) (e_m <- the rest, model copy kept) or
 * skips (sends no payload; everyone reuses its last s_m). It uploads during
 * the first D steps, when change_sq > threshold, or after D skips in a row;
 * threshold = sum of the last D-1 ||update||^2 / (c lr M^2), the same on every
 * rank. change_sq = ||grad_m(theta^k) - grad_m(theta_hat_m)||^2 on the same
 * minibatch, computed by the caller at terse_sasg_stale_point() (only it can
 * evaluate the stale model; +inf forces an upload, NaN or a negative value
 * when it is needed is TERSE_ERR_INVALID_ARG on every rank); pass a negative
 * value when terse_sasg_need_change() is 0. update = sum over ranks of their current
 * s_m (apply theta <- theta - update), identical on every rank.
 */
typedef struct terse_sasg terse_sasg_t;

typedef struct terse_sasg_params {
    size_t struct_size;           /* set by terse_sasg_params_init (the struct can grow) */
    double ratio;                 /* top-k density (default 0.01) */
    int D;                        /* window and forced-refresh period (default 10) */
    double lr;                    /* alpha (default 0.005) */
    double c;                     /* threshold constant (default 1) */
    int sampled_topk;             /* default 1 */
    terse_sparse_values_t values; /* value format of s_m (default FP32) */
    int ntensors;                 /* > 0: top-k per tensor, tensor t being
                                   * [offsets[t], offsets[t+1]) (offsets[ntensors] = n);
                                   * 0: over the whole vector */
    const size_t *offsets;        /* copied at create */
} terse_sasg_params_t;

TERSE_API void terse_sasg_params_init(terse_sasg_params_t *params);
TERSE_API terse_status_t terse_sasg_create(terse_comm_t *comm, size_t n,
                                           const terse_sasg_params_t *params, terse_sasg_t **out);
TERSE_API void terse_sasg_destroy(terse_sasg_t *s);
/** 1 when this step's decision needs change_sq (not in warm-up or a forced refresh). */
TERSE_API int terse_sasg_need_change(const terse_sasg_t *s);
/** The model at this rank's last upload (n floats), where the caller evaluates the stale gradient. */
TERSE_API const float *terse_sasg_stale_point(const terse_sasg_t *s);
TERSE_API double terse_sasg_threshold(const terse_sasg_t *s);
TERSE_API terse_status_t terse_sasg_set_lr(terse_sasg_t *s, double lr);
/** One step. theta: the current model (kept as the stale point on upload). */
TERSE_API terse_status_t terse_sasg_step(terse_sasg_t *s, const float *theta, const float *grad,
                                         double change_sq, float *update, int *uploaded);
/** The same step, non-blocking: the decision, top-k and encoding happen in
 * this call (grad may be reused at once); theta is copied and *update and
 * *uploaded are written when *req completes, so theta and update must stay
 * valid until then. One step per handle in flight (TERSE_ERR_BUSY); a
 * failed step changes nothing. */
TERSE_API terse_status_t terse_sasg_step_start(terse_sasg_t *s, const float *theta, const float *grad,
                                               double change_sq, float *update, int *uploaded,
                                               terse_request_t **req);
/** The same step given both gradients: change_sq = ||grad - grad_stale||^2 is
 * computed here (float differences squared and summed in double, in index
 * order). grad_stale (the gradient at
 * terse_sasg_stale_point() on the same minibatch) may be NULL when
 * terse_sasg_need_change() is 0; NULL when it is needed is
 * TERSE_ERR_INVALID_ARG on every rank. */
TERSE_API terse_status_t terse_sasg_step_grads(terse_sasg_t *s, const float *theta, const float *grad,
                                               const float *grad_stale, float *update, int *uploaded);

typedef struct terse_sasg_stats {
    uint64_t steps, uploads, skips, bytes_sent; /* this rank */
} terse_sasg_stats_t;
TERSE_API terse_status_t terse_sasg_stats(const terse_sasg_t *s, terse_sasg_stats_t *stats);
TERSE_API size_t terse_sasg_state_size(const terse_sasg_t *s);
TERSE_API terse_status_t terse_sasg_save(const terse_sasg_t *s, void *buf, size_t len);
TERSE_API terse_status_t terse_sasg_load(terse_sasg_t *s, const void *buf, size_t len);

/*
 * Gradient coding (Tandon et al., ICML 2017): the data is split into n
 * partitions and rank i computes the gradients g_j of s+1 of them and sends
 * c_i = sum_j B_ij g_j, so that any n - s responders S decode the full sum:
 * sum_{i in S} a_S,i c_i = sum_j g_j.
 *  - FRACTIONAL: (s+1) divides n; ranks form groups of s+1 consecutive
 *    ranks that hold the same s+1 partitions with coefficient 1; a_S picks
 *    (or, with TERSE_GC_AVERAGE, averages) one responder per group.
 *  - CYCLIC: rank i holds partitions i..i+s (mod n); B is Tandon's
 *    construction from a random s x n matrix H with H 1 = 0 (rows of B span
 *    its null space); a_S is the least-squares solution of B_S^T a = 1 by
 *    Householder QR, refused (TERSE_ERR_UNSUPPORTED) when its residual is
 *    not tiny. Everything is computed in double from (n, s, seed) alone, so
 *    every rank running the same binary gets the same bits.
 * n <= 1024, 0 <= s < n.
 */
typedef enum terse_gc_scheme {
    TERSE_GC_NONE = 0,
    TERSE_GC_FRACTIONAL,
    TERSE_GC_CYCLIC
} terse_gc_scheme_t;

typedef struct terse_gc terse_gc_t;

#define TERSE_GC_AVERAGE 1 /* fractional: average a group's responders (cuts compression noise) */

TERSE_API terse_status_t terse_gc_create(int n, int s, terse_gc_scheme_t scheme, uint64_t seed,
                                         terse_gc_t **gc);
TERSE_API void terse_gc_destroy(terse_gc_t *gc);
/** The s+1 partitions rank computes (parts, ascending position in its
 * cycle) and their coefficients: c_rank = sum_k coeffs[k] * g_parts[k]. */
TERSE_API terse_status_t terse_gc_assignment(const terse_gc_t *gc, int rank, int *parts, double *coeffs);
/** a[0..n) for the responders set (a bitmap of n bits, bit i of word i/64):
 * zero outside it. Fewer than n - s responders may still decode (fractional:
 * one per group); when they cannot, TERSE_ERR_INVALID_ARG. flags: TERSE_GC_AVERAGE. */
TERSE_API terse_status_t terse_gc_decode_vector(const terse_gc_t *gc, const uint64_t *set, int flags,
                                                double *a);

/*
 * Partial (straggler-tolerant) allreduce of float32 vectors: a persistent
 * handle whose steps complete with the contributions of a subset of the
 * ranks, chosen by a policy as they arrive:
 *   ALL          every rank (an ordinary allreduce, for comparison);
 *   QUORUM(k)    the first k ranks to arrive;
 *   DEADLINE(t)  whoever arrived within t seconds of the first arrival
 *                (waiting for at least min_contributors);
 *   SOLO         the first rank to arrive triggers the step (eager-SGD):
 *                the others join with what they have, i.e. nothing;
 *   MAJORITY     one rank per step, drawn from the shared seed, triggers it
 *                when it arrives (eager-SGD's majority: on average half the
 *                ranks have arrived by then).
 * Agreement is part of the step: comm rank 0's context decides the set as
 * contributions arrive and sends it to all, and the contributions of that
 * set - and only those - are exchanged and summed in rank order, so the
 * result, the set (a bitmap), its size and every rank's staleness (steps
 * since its last contribution was used) are identical on every rank.
 *
 * Waiting and stragglers: a step is decided while the slow ranks compute,
 * which needs every rank's context to make progress on its own - run the
 * progress thread (TERSE_PROGRESS_THREAD=1 or terse_comm_params_t
 * .progress_thread); without it a step waits for every rank's call, like an
 * ordinary allreduce (still correct, no longer tolerant). A rank whose
 * contribution comes after its step was decided gets that step's result at
 * once and its contribution is dropped (never mixed into a later step) or,
 * with fold_late, added to its residual and sent with its next contribution
 * (nothing is lost); terse_partial_wait_decision lets a slow rank stop
 * computing for a step that no longer needs it. The ranks may be up to
 * `lookahead` steps apart. A straggler is not a failure and keeps its place;
 * a rank that dies makes every step fail with TERSE_ERR_PEER_FAILED
 * (terse_comm_shrink the parent communicator), a silent one with
 * TERSE_ERR_TIMEOUT once some rank has arrived and timeout_sec passed.
 *
 * Codes: "fp32" (default), "sign1" (unbiased stochastic 1-bit with a scale
 * per bucket: +R with probability (1 + x/R)/2, else -R; R = max |x| of the
 * bucket, so linear decoding stays unbiased), "sign" (scaled sign, biased:
 * error feedback on by default), or any other codec of the compressed
 * allreduce. With gradient coding (gc != NONE) each rank passes its coded
 * gradient c_i (terse_gc_assignment) and the step returns the decoded full
 * sum (or, with AVG, sum / n); the policy must guarantee n - s responders
 * (QUORUM with k >= n - s, the default then, or ALL).
 */
typedef struct terse_partial terse_partial_t;

typedef enum terse_partial_policy {
    TERSE_PARTIAL_ALL = 0,
    TERSE_PARTIAL_QUORUM,
    TERSE_PARTIAL_DEADLINE,
    TERSE_PARTIAL_SOLO,
    TERSE_PARTIAL_MAJORITY
} terse_partial_policy_t;

typedef struct terse_partial_params {
    size_t struct_size;            /* set by terse_partial_params_init (the struct can grow) */
    terse_partial_policy_t policy; /* default ALL (QUORUM(n - s) with gradient coding) */
    int quorum;                    /* QUORUM: k in [1, n] */
    double deadline_sec;           /* DEADLINE: t > 0 */
    int min_contributors;          /* DEADLINE: at least this many (default 1) */
    int max_stale;                 /* tau > 0: after tau partial steps in a row the next
                                    * step waits for every rank (0: never forced) */
    int fold_late;                 /* a contribution left out goes to the sender's residual */
    const char *codec;             /* default "fp32" */
    size_t bucket;                 /* values per scale (sign1); 0 = 512 */
    int error_feedback;            /* -1: default (on for biased codecs), 0 off, 1 on */
    terse_op_t op;                 /* SUM (default) or AVG (over the contributors; over n
                                    * partitions with gradient coding) */
    terse_gc_scheme_t gc;          /* gradient coding scheme (default none) */
    int gc_s;                      /* stragglers tolerated, 0 <= s < n */
    uint64_t seed;                 /* random streams: codes, MAJORITY, the cyclic code */
    int lookahead;                 /* steps a rank may lag the decisions (default 2) */
} terse_partial_params_t;

TERSE_API void terse_partial_params_init(terse_partial_params_t *params);

/** Collective over comm (it duplicates comm: the handle's traffic has its own
 * communicator). Ranks must pass the same count and parameters (checked at
 * the first step: TERSE_ERR_MISMATCH). Invalid parameters are
 * TERSE_ERR_INVALID_ARG with the reason in the log (TERSE_DEBUG=warn). */
TERSE_API terse_status_t terse_partial_create(terse_comm_t *comm, size_t count,
                                              const terse_partial_params_t *params,
                                              terse_partial_t **out);
/** Local: the steps this rank has not called yet are cancelled. */
TERSE_API void terse_partial_destroy(terse_partial_t *p);

/** What a step used; the arrays belong to the handle, valid until its next step. */
typedef struct terse_partial_info {
    uint64_t step;             /* 0, 1, ... */
    int contributors;          /* size of the set */
    const uint64_t *set;       /* bitmap of comm ranks, (n + 63) / 64 words */
    const uint32_t *staleness; /* [n] steps since each rank's last contribution was used */
    int included;              /* this rank's contribution is in the set */
    int late;                  /* it came after the step was decided */
    int forced;                /* the staleness bound made this a full step */
    uint64_t bytes_sent;       /* payload bytes this rank sent in the step */
} terse_partial_info_t;

#define TERSE_PARTIAL_IN(info, r) ((int)(((info)->set[(r) / 64] >> ((r) % 64)) & 1u))

/**
 * One step: recvbuf = the sum (or mean) of the set's decoded contributions
 * (gradient coding: the decoded full gradient). sendbuf NULL contributes
 * nothing (a rank catching up). Blocking; info may be NULL. On an error the
 * handle's residual is as before the call.
 */
TERSE_API terse_status_t terse_partial_allreduce(terse_partial_t *p, const float *sendbuf, float *recvbuf,
                                                 terse_partial_info_t *info);
/** Block until the step this rank calls next has been decided or timeout_sec
 * passed; *decided = 1 when it was decided (without this rank if it has not
 * called it). For injected or real stragglers: stop computing, call the step. */
TERSE_API terse_status_t terse_partial_wait_decision(terse_partial_t *p, double timeout_sec, int *decided);
/** Steps already decided that this rank has not called yet. */
TERSE_API int terse_partial_behind(terse_partial_t *p);
/** Copy the residual (count floats) into out. */
TERSE_API terse_status_t terse_partial_residual(const terse_partial_t *p, float *out);

/*
 * AdaCons (Choukroun, Azoulay, Kisilev: adaptive consensus gradient
 * aggregation): instead of the mean, the direction G = sum_i alpha_i g_i /
 * ||g_i||, persistent over a tensor of `count` float32 values. Per step:
 * S = allreduce(g); a_i = <S/N, g_i> / (||g_i|| + eps); allgather the N a_i;
 * subspace momentum on the sorted coefficients (mu = sorted(a) at the first
 * step, then mu <- beta mu + (1 - beta) sorted(a)); the rank whose a is the
 * r-th smallest (ties: lower rank first) gets mu[r]; alpha <- alpha / sum;
 * G = allreduce(g_i alpha_i / ||g_i||). When sum alpha <= eps or an alpha is
 * negative the step falls back to the plain mean S / N (stats say so).
 * ||G|| <= 1: rescale = 1 multiplies G by the mean ||g_i|| for plain SGD.
 * Everything is bit-identical on every rank (the coefficients are computed
 * once and allgathered; the momentum is a function of them).
 *
 * Either allreduce may go through a compressed allreduce (codec_sum,
 * codec_combine: a codec name of the compressed allreduce; NULL or "fp32":
 * dense), each with its own error-feedback state. Unbiased: a dense first
 * allreduce with an unbiased codec (cnat8, natdither, sign1, qsgd) without
 * error feedback on the second - E[G] is then the dense G, since alpha
 * depends on the first only. A compressed first allreduce makes alpha a
 * nonlinear function of a noisy sum: biased, as is sign (biased codec; error
 * feedback corrects it over steps, not per step). tests/test_adacons checks
 * the unbiased case statistically.
 */
typedef struct terse_adacons terse_adacons_t;

typedef struct terse_adacons_params {
    size_t struct_size;        /* set by terse_adacons_params_init (the struct can grow) */
    double beta;               /* subspace momentum in [0, 1) (default 0.99; 0: none) */
    double eps;                /* default 1e-8 */
    int rescale;               /* 1: G *= mean ||g_i|| */
    const char *codec_sum;     /* the allreduce of the gradients: NULL/"fp32" dense */
    const char *codec_combine; /* the allreduce of the scaled gradients */
    int error_feedback;        /* of the compressed allreduces: 0 their default, 1 on, -1 off */
    uint64_t seed;             /* their random streams */
} terse_adacons_params_t;

TERSE_API void terse_adacons_params_init(terse_adacons_params_t *params);
/** Local: ranks must pass the same count and parameters (checked at the
 * first step: TERSE_ERR_MISMATCH on every rank). */
TERSE_API terse_status_t terse_adacons_create(terse_comm_t *comm, size_t count, const terse_adacons_params_t *params,
                                              terse_adacons_t **out);
TERSE_API void terse_adacons_destroy(terse_adacons_t *a);
/** One step: out (count floats, may equal g) = G. Collective; blocking. A
 * non-finite g on any rank is TERSE_ERR_INVALID_ARG on every rank with the
 * communicator and the momentum as they were. */
TERSE_API terse_status_t terse_adacons_step(terse_adacons_t *a, const float *g, float *out);
/** The same, non-blocking (dense allreduces only: TERSE_ERR_UNSUPPORTED with
 * codecs): one request whose three exchanges chain in the executor; g and
 * out stay the caller's business until it completes; one step in flight
 * (TERSE_ERR_BUSY). */
TERSE_API terse_status_t terse_adacons_step_start(terse_adacons_t *a, const float *g, float *out,
                                                  terse_request_t **req);

typedef struct terse_adacons_stats {
    uint64_t steps, fallbacks;  /* completed steps, and those that took the mean */
    int fallback;               /* the last step did */
    double mean_norm;           /* mean ||g_i|| of the last step */
    const double *coef;         /* [n] a_i of the last step (valid until the next) */
    const double *alpha;        /* [n] alpha_i of the last step after normalisation */
} terse_adacons_stats_t;

TERSE_API terse_status_t terse_adacons_stats(const terse_adacons_t *a, terse_adacons_stats_t *stats);
/** Checkpoint of the momentum, counters and the compressed allreduces' state. */
TERSE_API size_t terse_adacons_state_size(const terse_adacons_t *a);
TERSE_API terse_status_t terse_adacons_save(const terse_adacons_t *a, void *buf, size_t len);
TERSE_API terse_status_t terse_adacons_load(terse_adacons_t *a, const void *buf, size_t len);

/*
 * Error-bounded allreduce (sum) for scientific data, float32 or float64.
 *
 * Every element of the result differs from the exact sum of the ranks'
 * inputs by at most the bound: TERSE_EB_ABS bounds it by `bound`,
 * TERSE_EB_REL by bound x (max - min) of all ranks' inputs. Each rank
 * quantises its input on a grid shared by all ranks (step a power of two,
 * chosen so that n x step/2 plus the rounding of the output format stays
 * within the bound), the integer codes are delta-coded and bit-packed per
 * block of 256 and summed exactly as integers (reduce-scatter to the block
 * owners, allgather of the packed sums): the only error is the first
 * quantisation, whatever the rank count or path (docs/design.md,
 * "Error-bounded allreduce", has the proof). The result is bit-identical
 * on every rank.
 *
 * Refusals, the same on every rank (recvbuf untouched, comm usable):
 * TERSE_ERR_INVALID_ARG for a bad mode/bound/dtype or a NaN or infinity in
 * any rank's input; TERSE_ERR_MISMATCH when ranks pass different counts,
 * dtypes, modes or bounds; TERSE_ERR_UNSUPPORTED when the bound cannot be
 * guaranteed - a relative bound over a constant field (range 0), or a bound
 * below what the output format resolves at the result's magnitude - so the
 * caller runs an exact allreduce instead.
 */
typedef enum terse_eb_mode {
    TERSE_EB_ABS = 1, /* |result - exact| <= bound */
    TERSE_EB_REL = 2  /* |result - exact| <= bound x (max - min of every rank's input) */
} terse_eb_mode_t;

typedef struct terse_eb_info {
    double bound;      /* the absolute bound guaranteed (the relative one resolved) */
    double step;       /* the quantisation grid step */
    double max_error;  /* an upper bound of the error achieved: the ranks' largest
                        * quantisation errors summed, plus the output rounding (<= bound) */
    double ratio;      /* this rank's input bytes / its packed code bytes */
    size_t bytes_sent; /* what this rank sent (both phases, sizes included) */
} terse_eb_info_t;

/** info may be NULL. Blocking; collective over comm like terse_allreduce. */
TERSE_API terse_status_t terse_eb_allreduce(terse_comm_t *comm, const void *sendbuf, void *recvbuf,
                                            size_t count, terse_dtype_t dtype, terse_eb_mode_t mode,
                                            double bound, terse_eb_info_t *info);

/**
 * Print every configuration variable with its default, current value and
 * help text to the given FILE* (stdout if NULL).
 */
TERSE_API void terse_config_print(void *file);

/** "major.minor.patch" */
TERSE_API const char *terse_version(void);

#ifdef __cplusplus
}
#endif
#endif /* TERSE_H */
