"""The terse Python bindings against numpy references, 1-4 ranks (one process
per rank, started by launch.py). Inputs are small integers in floating
point so every order of summation gives the exact reference; replicas are
compared to the bit through an allgather."""
import os
import time

import numpy as np
import torch

import terse
from harness import assert_raises, case, main

DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64]


def data(rank, n, dtype, salt=0):
    rng = np.random.default_rng(1000 * salt + rank)
    return rng.integers(-8, 9, n).astype(dtype)


def all_data(comm, n, dtype, salt=0):
    return [data(r, n, dtype, salt) for r in range(comm.size)]


def same_everywhere(comm, x):
    """x (numpy) is bit-identical on every rank."""
    b = np.ascontiguousarray(x).tobytes()
    raw = np.frombuffer(b + bytes(-len(b) % 4), np.int32)
    got = comm.allgather(raw).reshape(comm.size, -1)
    assert (got == got[0]).all(), "replicas differ"


@case
def allreduce_every_dtype_and_op(comm):
    for dt in DTYPES:
        for op, ref in (("sum", np.sum), ("max", np.max), ("min", np.min), ("prod", np.prod)):
            xs = all_data(comm, 1000, dt, 1)
            if op == "prod":
                xs = [np.clip(x, -2, 2).astype(dt) for x in xs]
            x = xs[comm.rank].copy()
            out = comm.allreduce(x, op=op)
            assert out is x
            want = ref(np.stack(xs).astype(np.float64), axis=0)
            assert np.array_equal(x.astype(np.float64), want), (dt, op)
    x = data(comm.rank, 64, np.float32) * comm.size
    comm.allreduce(x, op="avg")
    assert np.allclose(x, np.mean(np.stack(all_data(comm, 64, np.float32)) * comm.size, axis=0))


@case
def allreduce_torch_tensors_without_copies(comm):
    for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64):
        t = torch.full((333,), comm.rank + 1, dtype=dt)
        ptr = t.data_ptr()
        comm.allreduce(t)
        assert t.data_ptr() == ptr
        assert torch.all(t == comm.size * (comm.size + 1) // 2), dt
    a = torch.arange(10, dtype=torch.float32)
    out = torch.empty(10)
    comm.allreduce(a, out=out)
    assert torch.equal(out, torch.arange(10.0) * comm.size) and torch.equal(a, torch.arange(10.0))


@case
def rejects_bad_buffers(comm):
    m = np.ones((8, 8), np.float32)
    assert_raises(ValueError, comm.allreduce, m[:, 1], match="contiguous")
    assert_raises(ValueError, comm.allreduce, torch.ones(8, 8).t(), match="contiguous")
    assert_raises(TypeError, comm.allreduce, np.ones(4, np.uint8), match="not supported")
    assert_raises(TypeError, comm.allreduce, [1.0, 2.0], match="numpy array")
    ro = np.ones(4, np.float32)
    ro.flags.writeable = False
    assert_raises(ValueError, comm.allreduce, ro, match="read-only")
    assert_raises(ValueError, comm.allreduce, np.ones(4, np.float32), op="xor")
    assert_raises(ValueError, comm.allreduce, np.ones(4, np.float32), out=np.ones(5, np.float32))
    assert_raises(TypeError, comm.allreduce, np.ones(4, np.float32), out=np.ones(4, np.float64))
    if comm.size > 1:
        assert_raises(ValueError, comm.reduce_scatter, np.ones(comm.size * 3 + 1, np.float32))
    # invalid root: every rank gets InvalidArgument, the communicator stays usable
    e = assert_raises(terse.InvalidArgument, comm.broadcast, np.ones(4, np.float32), root=comm.size)
    assert e.name == "INVALID_ARG" and e.status == -1
    x = np.ones(4, np.float32)
    comm.allreduce(x)
    assert (x == comm.size).all()


@case(ranks=(2, 3, 4))
def mismatch_is_an_exception_with_detail(comm):
    d = comm.dup()  # the mismatch makes d's error sticky; comm stays clean
    n = 10 + (comm.rank == 1)
    e = assert_raises(terse.TerseError, d.allreduce, np.ones(n, np.float32))
    assert e.name in ("MISMATCH", "PEER_FAILED", "REMOTE_ABORT"), e.name
    assert e.detail, "no detail string"
    # sticky: the same error again, at once
    e2 = assert_raises(terse.TerseError, d.barrier)
    assert e2.status == e.status
    d.close()
    assert_raises(ValueError, d.barrier, match="closed")


@case
def broadcast_reduce_allgather_reduce_scatter_alltoall(comm):
    n, size, rank = 257, comm.size, comm.rank
    for dt in DTYPES:
        xs = all_data(comm, n, dt, 2)
        for root in range(size):
            b = xs[rank].copy()
            comm.broadcast(b, root=root)
            assert np.array_equal(b, xs[root])
            r = xs[rank].copy()
            comm.reduce(r, root=root)
            if rank == root:
                assert np.array_equal(r.astype(np.float64), np.sum(np.stack(xs).astype(np.float64), 0))
        g = comm.allgather(xs[rank])
        assert np.array_equal(g, np.concatenate(xs))
        big = all_data(comm, n * size, dt, 3)
        rs = comm.reduce_scatter(big[rank])
        want = np.sum(np.stack(big).astype(np.float64), 0)[rank * n:(rank + 1) * n]
        assert np.array_equal(rs.astype(np.float64), want)
        a2a = comm.alltoall(big[rank])
        want = np.concatenate([big[q][rank * n:(rank + 1) * n] for q in range(size)])
        assert np.array_equal(a2a, want)
    counts = [r + 1 for r in range(size)]
    v = comm.allgatherv(np.full(rank + 1, rank, np.int32), counts)
    assert np.array_equal(v, np.concatenate([np.full(r + 1, r, np.int32) for r in range(size)]))
    sc = [(rank + q) % 3 for q in range(size)]
    rc = [(q + rank) % 3 for q in range(size)]
    x = np.concatenate([np.full(sc[q], 100 * rank + q, np.float64) for q in range(size)])
    y = comm.alltoallv(x, sc, rc)
    assert np.array_equal(y, np.concatenate([np.full(rc[q], 100 * q + rank, np.float64) for q in range(size)]))
    comm.barrier()


@case
def gather_scatter_and_the_v_forms_non_blocking(comm):
    n, size, rank = 131, comm.size, comm.rank
    for dt in (np.float32, np.int64):
        xs = all_data(comm, n, dt, 4)
        for root in range(size):
            g = comm.gather(xs[rank], root=root)
            if rank == root:
                assert np.array_equal(g, np.concatenate(xs))
            else:
                assert g is None
            r = comm.gather(xs[rank], root=root, async_op=True)
            g = r.wait()
            assert (rank != root and g is None) or np.array_equal(g, np.concatenate(xs))
            big = all_data(comm, n * size, dt, 5)
            out = np.empty(n, dt)
            comm.scatter(big[root] if rank == root else None, out, root=root)
            assert np.array_equal(out, big[root][rank * n:(rank + 1) * n])
            out2 = torch.empty(n, dtype=torch.float32 if dt == np.float32 else torch.int64)
            src = torch.from_numpy(big[root]) if rank == root else None
            comm.scatter(src, out2, root=root, async_op=True).wait()
            assert np.array_equal(out2.numpy(), big[root][rank * n:(rank + 1) * n])
    assert_raises(ValueError, comm.gather, np.ones(3, np.float32), root=size)
    assert_raises(ValueError, comm.scatter, None, np.ones(3, np.float32), root=-1)
    if rank == 0:
        assert_raises(ValueError, comm.gather, np.ones(3, np.float32), root=0, out=np.ones(5, np.float32))
        assert_raises(ValueError, comm.scatter, np.ones(3 * size + 1, np.float32), np.ones(3, np.float32))
    # the v forms started, several at a time, = the blocking ones
    counts = [2 * r + 1 for r in range(size)]
    reqs = [comm.allgatherv(np.full(counts[rank], rank + 10 * i, np.float32), counts, async_op=True)
            for i in range(3)]
    for i, r in enumerate(reqs):
        want = np.concatenate([np.full(counts[q], q + 10 * i, np.float32) for q in range(size)])
        assert np.array_equal(r.wait(), want)
    sc = [(rank * 3 + q) % 4 for q in range(size)]
    rc = [(q * 3 + rank) % 4 for q in range(size)]
    x = np.concatenate([np.full(sc[q], 100 * rank + q, np.int32) for q in range(size)])
    y = comm.alltoallv(x, sc, rc, async_op=True).wait()
    assert np.array_equal(y, np.concatenate([np.full(rc[q], 100 * q + rank, np.int32) for q in range(size)]))


@case
def non_blocking_requests(comm):
    xs = [np.full(50000, comm.rank + i, np.float32) for i in range(4)]
    reqs = [comm.allreduce(x, async_op=True) for x in xs]
    for i, r in enumerate(reqs):
        out = r.wait()
        assert out is xs[i]
        assert (out == sum(q + i for q in range(comm.size))).all()
        assert r.test() and r.done
    # test() until done (never more than the bound: the progress thread moves it)
    y = np.ones(1 << 18, np.float64)
    r = comm.allreduce(y, async_op=True)
    t0 = time.time()
    while not r.test():
        time.sleep(0.001)
        assert time.time() - t0 < 30
    assert (r.wait() == comm.size).all()
    # callbacks and torch futures, run by the completion thread
    seen = []
    r = comm.allgather(np.array([comm.rank], np.int64), async_op=True)
    r.add_done_callback(lambda q: seen.append(q.wait().tolist()))
    fut = comm.broadcast(torch.full((3,), float(comm.rank)), root=0, async_op=True).get_future()
    assert torch.equal(fut.wait(), torch.zeros(3))
    r.wait()
    t0 = time.time()
    while not seen and time.time() - t0 < 10:
        time.sleep(0.001)
    assert seen == [list(range(comm.size))]
    # a failing request raises from wait, and from the future
    assert_raises(terse.InvalidArgument, comm.broadcast, np.ones(3, np.float32), root=-5, async_op=True)


@case
def persistent_plan(comm):
    x = np.zeros(1000, np.float32)
    plan = comm.allreduce_init(x)
    for step in range(5):
        x[:] = comm.rank + step
        plan.start()
        out = plan.wait()
        assert (out == sum(r + step for r in range(comm.size))).all()
    plan.free()


@case
def communicators_from_communicators(comm):
    size, rank = comm.size, comm.rank
    s = comm.split(rank % 2, key=-rank)
    members = [r for r in range(size) if r % 2 == rank % 2]
    assert s.size == len(members) and s.rank == sorted(members, key=lambda r: -r).index(rank)
    x = np.array([rank], np.int64)
    s.allreduce(x)
    assert x[0] == sum(members)
    none = comm.split(None if rank == 0 else 1)
    assert (none is None) == (rank == 0)
    d = comm.dup()
    assert (d.size, d.rank) == (size, rank)
    if rank < 2 or size == 1:
        g = comm.create_group([0, 1] if size > 1 else [0])
        assert g.size == min(size, 2)
        g.barrier()
        g.close()
    node = comm.split_node()
    assert node.size == comm.local_size == size and comm.node_count == 1
    assert_raises(terse.InvalidArgument, comm.split, -5)
    for c in (s, d, node) + ((none,) if none else ()):
        c.close()
    comm.barrier()


@case
def bootstrap_through_a_store(comm):
    from datetime import timedelta
    store = torch.distributed.TCPStore("127.0.0.1", int(os.environ["MASTER_PORT"]), comm.size,
                                       comm.rank == 0, timedelta(seconds=60))
    c = terse.Comm.from_store(store, comm.rank, comm.size)
    x = np.ones(10, np.float32)
    c.allreduce(x)
    assert (x == comm.size).all() and c.transport == comm.transport
    c.close()
    # an allgather that returns garbage is a clear error, not a crash
    if comm.size > 1:  # (one rank needs no exchange)
        e = assert_raises(terse.TerseError, terse.Comm.from_oob, lambda b: [b[:1]], comm.rank, comm.size)
        assert "out-of-band" in str(e)


@case
def compressed_allreduce(comm):
    n = 5000
    g = data(comm.rank, n, np.float32, 4)
    with terse.CompressedAllreduce(comm, n, codec="fp32", error_feedback=False) as h:
        out = h.allreduce(g.copy())
        assert np.array_equal(out, np.mean(np.stack(all_data(comm, n, np.float32, 4)), 0, dtype=np.float64)
                              .astype(np.float32)) or np.allclose(out, np.mean(np.stack(all_data(comm, n, np.float32, 4)), 0))
    for codec in ("cnat8", "natdither", "sign", "topk", "fp16", "sign1"):
        h = terse.CompressedAllreduce(comm, n, codec=codec, seed=7)
        rng = np.random.default_rng(comm.rank)
        steps = [rng.standard_normal(n).astype(np.float32) for _ in range(6)]
        for x in steps[:3]:
            same_everywhere(comm, h.allreduce(x.copy()))
        sd = h.state_dict()
        after = [h.allreduce(x.copy()) for x in steps[3:]]
        h.load_state_dict(sd)
        again = [h.allreduce(x.copy(), async_op=True).wait() for x in steps[3:]]
        assert all(np.array_equal(a, b) for a, b in zip(after, again)), codec
        st = h.stats()
        assert st["steps"] == 6 and st["codec"], st  # restored to 3, then 3 more
        assert comm.size == 1 or st["bytes_sent_total"] > 0, st
        if codec == "sign":
            assert np.linalg.norm(h.residual()) > 0
            y = h.step_ahead(np.zeros(n, np.float32), out=np.empty(n, np.float32))
            assert np.array_equal(y, -h.residual())
        h.close()
    assert_raises(terse.InvalidArgument, terse.CompressedAllreduce, comm, n, codec="nope")
    h = terse.CompressedAllreduce(comm, n)
    assert_raises(ValueError, h.allreduce, np.ones(n + 1, np.float32))
    assert_raises(TypeError, h.allreduce, np.ones(n, np.float64))
    other = terse.CompressedAllreduce(comm, n, codec="sign")
    assert_raises(ValueError, other.load_state_dict, h.state_dict() | {"type": "SASG"})
    assert_raises(terse.InvalidArgument, other.load_state_dict, h.state_dict())


@case
def sparse_allgather_and_sasg(comm):
    n, size, rank = 1000, comm.size, comm.rank
    sp = terse.SparseAllgather(comm, n)
    idx = [np.sort(np.random.default_rng(r).choice(n, 10 + r, replace=False)).astype(np.uint32)
           for r in range(size)]
    val = [np.arange(10 + r, dtype=np.float32) + r for r in range(size)]
    got = sp.allgather(idx[rank], val[rank])
    for r in range(size):
        assert np.array_equal(got[r][0], idx[r]) and np.array_equal(got[r][1], val[r])
    dense = sp.allreduce(idx[rank], val[rank])
    want = np.zeros(n, np.float32)
    for r in range(size):
        np.add.at(want, idx[r], val[r])
    assert np.allclose(dense, want)
    assert np.array_equal(sp.allreduce(idx[rank], val[rank], async_op=True).wait(), dense)
    empty = sp.allgather(np.empty(0, np.uint32), np.empty(0, np.float32))
    assert len(empty) == size and all(i.size == 0 and v.size == 0 for i, v in empty)
    assert_raises(terse.InvalidArgument, sp.allgather, np.array([n + 5], np.uint32), np.ones(1, np.float32))
    assert_raises(ValueError, sp.allgather, idx[rank], val[rank][:-1])
    assert np.array_equal(terse.topk(np.array([1, -5, 3, 0.5], np.float32), 2), [1, 2])
    s = terse.SASG(comm, n, ratio=0.05, D=3, lr=0.1)
    theta = np.zeros(n, np.float32)
    rng = np.random.default_rng(rank)
    for step in range(6):
        grad = rng.standard_normal(n).astype(np.float32)
        gs = rng.standard_normal(n).astype(np.float32) if s.need_change else None
        upd, uploaded = s.step(theta, grad, grad_stale=gs)
        same_everywhere(comm, upd)
        theta -= upd
    sd = s.state_dict()
    s.load_state_dict(sd)
    st = s.stats()
    assert st["steps"] == 6 and st["uploads"] >= 3


@case
def partial_adacons_gradient_coding_eb(comm):
    n = 2000
    x = data(comm.rank, n, np.float32, 5)
    p = terse.Partial(comm, n, policy="all")
    out, info = p.allreduce(x)
    assert np.array_equal(out, np.sum(np.stack(all_data(comm, n, np.float32, 5)), 0))
    assert info["contributors"] == comm.size and info["set"] == list(range(comm.size)) and info["included"]
    p.close()
    assert_raises(ValueError, terse.Partial, comm, n, policy="sometimes")
    a = terse.AdaCons(comm, n, beta=0.5)
    rng = np.random.default_rng(comm.rank)
    for _ in range(3):
        same_everywhere(comm, a.step(rng.standard_normal(n).astype(np.float32)))
    st = a.stats()
    assert st["steps"] == 3 and len(st["alpha"]) == comm.size
    a.load_state_dict(a.state_dict())
    gc = terse.GradientCode(4, 1, "fractional")
    assert [q for q, _ in gc.assignment(0)] == [0, 1]
    y = np.random.default_rng(comm.rank).standard_normal(n)
    exact = np.sum(np.stack([np.random.default_rng(r).standard_normal(n) for r in range(comm.size)]), 0)
    got, info = comm.eb_allreduce(y.copy(), 1e-3, mode="abs")
    assert np.max(np.abs(got - exact)) <= 1e-3 and info["bound"] == 1e-3
    assert_raises(terse.InvalidArgument, comm.eb_allreduce, np.full(4, np.nan), 1e-3)


@case
def fork_after_create(comm):
    """The RDMA fork hazard: the parent writes to registered memory after a
    fork (copy-on-write would leave the device with the child's pages unless
    fork support or the kernel prevents it) and the results must follow."""
    n = 1 << 20
    x = np.full(n, comm.rank, np.float32)
    reg = comm.register(x)
    comm.allreduce(x)
    heap = np.ones(1000, np.float64)  # the child touches ordinary memory too
    pid = os.fork()
    if pid == 0:  # the child must not touch the parent's connections
        code = 0
        try:
            x[:] = -1.0           # its copy of the registered pages
            heap[:] = 2.0
            comm.allreduce(np.ones(4, np.float32))
            code = 3
        except RuntimeError as e:
            code = 0 if "forked child" in str(e) else 4
        except Exception:  # noqa: BLE001
            code = 5
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "child: %d" % status
    for step in range(3):  # the parent goes on, writing into its registered buffer
        x[:] = comm.rank + 1 + step
        comm.allreduce(x)
        assert (x == sum(r + 1 + step for r in range(comm.size))).all(), step
    reg.close()
    assert heap[0] == 1.0


def setup():
    return terse.Comm()


def teardown(comm):
    comm.barrier()
    comm.close()


if __name__ == "__main__":
    main(setup, teardown)
