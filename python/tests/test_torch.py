"""terse.torch: the "terse" ProcessGroup backend and the DDP hooks, 2-4 ranks.
The default group is terse's; a Gloo group of the same ranks is the
reference."""
import io
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

import terse.torch as tt
from harness import assert_raises, case, main

hooks = tt.hooks


def world():
    return dist.get_world_size()


def gather_flat(model, group=None):
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    out = [torch.empty_like(flat) for _ in range(world())]
    dist.all_gather(out, flat, group=group)
    return out


def same_params(model):
    got = gather_flat(model)
    return all(torch.equal(got[0], g) for g in got)


def net(seed=0):
    torch.manual_seed(seed)
    # 1.3 MB: more than DDP's first bucket (1 MB), so the rebuild makes several
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 10))


def batches(n, seed_extra=0):
    g = torch.Generator().manual_seed(1000 * dist.get_rank() + seed_extra)
    return [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))
            for _ in range(n)]


def train(ddp, opt, data, step_ahead=None):
    for x, y in data:
        if step_ahead is not None:
            with step_ahead:
                torch.nn.functional.cross_entropy(ddp(x), y).backward()
        else:
            torch.nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
        opt.zero_grad()


def ddp_of(model, pg=None):
    # small buckets: several per model, and the first-iteration rebuild
    return torch.nn.parallel.DistributedDataParallel(model, process_group=pg, bucket_cap_mb=0.004)


@case
def backend_collectives(g):
    n, r = world(), dist.get_rank()
    for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64):
        for op, want in ((dist.ReduceOp.SUM, n * (n + 1) // 2), (dist.ReduceOp.MAX, n), (dist.ReduceOp.MIN, 1)):
            t = torch.full((100,), r + 1, dtype=dt)
            dist.all_reduce(t, op=op)
            assert torch.all(t == want), (dt, op)
    t = torch.full((7,), float(r + 1))
    w = dist.all_reduce(t, op=dist.ReduceOp.PRODUCT, async_op=True)
    w.wait()
    assert torch.all(t == float(torch.arange(1, n + 1).prod()))
    assert_raises(ValueError, dist.all_reduce, torch.ones(3, dtype=torch.int32), op=dist.ReduceOp.BAND)
    nc = torch.ones(6, 4).t()  # non-contiguous: through a copy, written back
    dist.all_reduce(nc)
    assert torch.all(nc == n)
    for root in range(n):
        b = torch.arange(5.0) if r == root else torch.zeros(5)
        dist.broadcast(b, root)
        assert torch.equal(b, torch.arange(5.0))
        red = torch.full((3,), float(r))
        dist.reduce(red, root)
        if r == root:
            assert torch.all(red == sum(range(n)))
    outs = [torch.empty(2, 3) for _ in range(n)]
    dist.all_gather(outs, torch.full((2, 3), float(r)))
    assert all(torch.all(o == q) for q, o in enumerate(outs))
    big = torch.empty(n * 4)
    dist._all_gather_base(big, torch.full((4,), float(r)))
    assert torch.equal(big, torch.arange(n).float().repeat_interleave(4))
    rs = torch.empty(3)
    dist.reduce_scatter(rs, [torch.full((3,), float(q + r)) for q in range(n)])
    assert torch.all(rs == sum(r + q for q in range(n)) - sum(range(n)) + n * r) or \
        torch.all(rs == sum(q + r for q in range(n)))
    rs2 = torch.empty(2)
    dist._reduce_scatter_base(rs2, torch.arange(2.0 * n))
    assert torch.equal(rs2, torch.arange(2.0 * n)[2 * r:2 * r + 2] * n)
    a2a = torch.empty(n)
    dist.all_to_all_single(a2a, torch.arange(n).float() + 10 * r)
    assert torch.equal(a2a, torch.arange(n).float() * 10 + r)
    ins = [torch.full((q + 1,), float(r)) for q in range(n)]  # uneven: rank q gets q + 1 values
    outs = [torch.empty(r + 1) for _ in range(n)]
    dist.all_to_all(outs, ins)
    assert all(torch.all(o == q) for q, o in enumerate(outs))
    split_in = [q + 1 for q in range(n)]
    x = torch.cat([torch.full((q + 1, 2), float(r)) for q in range(n)])
    y = torch.empty((r + 1) * n, 2)
    dist.all_to_all_single(y, x, [r + 1] * n, split_in)
    assert torch.equal(y, torch.arange(n).float().repeat_interleave(r + 1)[:, None].expand(-1, 2))
    w = dist.all_to_all_single(y, x, [r + 1] * n, split_in, async_op=True)  # uneven, non-blocking
    w.wait()
    assert torch.equal(y, torch.arange(n).float().repeat_interleave(r + 1)[:, None].expand(-1, 2))
    for root in range(n):
        gl = [torch.empty(2, 2) for _ in range(n)] if r == root else None
        dist.gather(torch.full((2, 2), float(r)), gl, dst=root)
        if r == root:
            assert all(torch.all(o == q) for q, o in enumerate(gl))
        got = torch.empty(3, dtype=torch.int64)
        sl = [torch.full((3,), 7 * q, dtype=torch.int64) for q in range(n)] if r == root else None
        dist.scatter(got, sl, src=root)
        assert torch.all(got == 7 * r)
    assert_raises(RuntimeError, dist.send, torch.ones(1), (r + 1) % n)
    dist.barrier()
    assert dist.get_backend() == "terse"


@case
def ddp_on_terse_matches_gloo(g):
    a, b = net(), net()
    da, db = ddp_of(a), ddp_of(b, g["gloo"])
    oa, ob = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    data = batches(6)
    train(da, oa, data)
    train(db, ob, data)
    assert same_params(a)
    pa = torch.cat([p.detach().reshape(-1) for p in a.parameters()])
    pb = torch.cat([p.detach().reshape(-1) for p in b.parameters()])
    if world() == 2:  # a + b: one order of summation, the same bits
        assert torch.equal(pa, pb)
    else:
        assert torch.allclose(pa, pb, rtol=1e-5, atol=1e-6), (pa - pb).abs().max()


@case
def fp32_hook_equals_gloo_allreduce_hook(g):
    a, b = net(1), net(1)
    da, db = ddp_of(a, g["gloo"]), ddp_of(b, g["gloo"])
    st = hooks.CompressedState(process_group=g["gloo"], codec="fp32", error_feedback=False)
    da.register_comm_hook(st, hooks.compressed_hook)
    db.register_comm_hook(g["gloo"], default_hooks.allreduce_hook)
    oa, ob = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    data = batches(6, 1)
    train(da, oa, data)
    train(db, ob, data)
    pa = torch.cat([p.detach().reshape(-1) for p in a.parameters()])
    pb = torch.cat([p.detach().reshape(-1) for p in b.parameters()])
    if world() == 2:
        assert torch.equal(pa, pb), (pa - pb).abs().max()
    else:
        assert torch.allclose(pa, pb, rtol=1e-5, atol=1e-6), (pa - pb).abs().max()
    assert len(st.buckets) > 1 and st.rebuilds >= 1, (len(st.buckets), st.rebuilds)


def _hook_run(make_state, hook, steps=8, step_ahead=False, seed=2):
    m = net(seed)
    d = ddp_of(m)
    st = make_state()
    d.register_comm_hook(st, hook)
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    sa = tt.StepAhead(st, opt) if step_ahead else None
    train(d, opt, batches(steps, seed), sa)
    return m, d, opt, st


@case
def hooks_keep_replicas_bit_identical(g):
    before = torch.cat([p.detach().reshape(-1) for p in net(2).parameters()])
    runs = [("cnat8", hooks.cnat_state, hooks.compressed_hook, False),
            ("natdither", hooks.natdither_state, hooks.compressed_hook, False),
            ("sign+EF+step-ahead+error averaging", lambda: hooks.sign_ef_state(error_average_every=3),
             hooks.compressed_hook, True),
            ("topk+EF", lambda: hooks.topk_ef_state(ratio=0.05), hooks.compressed_hook, False),
            ("SASG", lambda: hooks.SASGState(ratio=0.05, D=3, lr=0.05), hooks.sasg_hook, False)]
    for name, make, hook, sa in runs:
        m, _, _, st = _hook_run(make, hook, step_ahead=sa)
        assert same_params(m), name
        after = torch.cat([p.detach().reshape(-1) for p in m.parameters()])
        assert not torch.equal(before, after), name + ": the model did not move"
        stats = st.stats()
        assert len(stats) >= 2, name
        if name.startswith("sign"):
            assert all(s["error_averages"] >= 1 for s in stats.values()), stats
        if name == "SASG":
            assert all(s["steps"] >= 7 for s in stats.values()), stats


@case
def hook_state_checkpoint_round_trip(g):
    m, d, opt, st = _hook_run(lambda: hooks.sign_ef_state(), hooks.compressed_hook, steps=3, seed=3)
    buf = io.BytesIO()
    torch.save({"model": m.state_dict(), "opt": opt.state_dict(), "comm": st.state_dict()}, buf)
    more = batches(4, 33)
    train(d, opt, more)
    first = torch.cat([p.detach().reshape(-1) for p in m.parameters()])
    buf.seek(0)
    ck = torch.load(buf)
    m.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    st.load_state_dict(ck["comm"])
    train(d, opt, more)
    second = torch.cat([p.detach().reshape(-1) for p in m.parameters()])
    assert torch.equal(first, second), "resumed run differs"
    # a fresh state gets the loaded residuals when its buckets appear
    st2 = hooks.sign_ef_state()
    st2.load_state_dict(ck["comm"])
    assert len(st2._pending) == len(ck["comm"]["buckets"])


@case
def dataloader_workers_fork_after_create(g):
    from torch.utils.data import DataLoader, TensorDataset
    gen = torch.Generator().manual_seed(dist.get_rank())
    ds = TensorDataset(torch.randn(128, 1, 8, 8, generator=gen), torch.randint(0, 10, (128,), generator=gen))
    m = net(4)
    d = ddp_of(m)
    st = hooks.cnat_state()
    d.register_comm_hook(st, hooks.compressed_hook)
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    loader = DataLoader(ds, batch_size=16, num_workers=2)  # forks: the communicator exists
    train(d, opt, list(loader))
    train(d, opt, loader)
    assert same_params(m)


@case
def hook_rejects_non_float32_buckets(g):
    m = net(5).double()
    d = ddp_of(m)
    d.register_comm_hook(hooks.cnat_state(), hooks.compressed_hook)
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    e = assert_raises(Exception, lambda: d(x).sum().backward())
    assert "float32" in str(e), str(e)
    e = assert_raises(ValueError, hooks.SASGState, ratio=0.05)  # its threshold needs the lr
    assert "optimizer" in str(e), str(e)


def setup():
    dist.init_process_group("terse", timeout=timedelta(seconds=120))
    return {"gloo": dist.new_group(backend="gloo")}


def teardown(g):
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(setup, teardown)
