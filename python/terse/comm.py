"""Communicators and the dense collectives.

    comm = terse.Comm()                          # rank/size from the launcher's environment
    comm = terse.Comm(rank=r, size=n, root_addr="10.0.0.1:29500")
    comm = terse.Comm.from_store(store, r, n)    # a torch.distributed Store as the OOB channel
    comm = terse.Comm.from_oob(allgather, r, n)  # any allgather(bytes) -> [bytes] * n
    comm.allreduce(x)                            # in place, like torch.distributed
    req = comm.allreduce(x, async_op=True); ...; req.wait()

Collectives follow torch.distributed: they work in place unless `out` is
given, take numpy arrays or contiguous CPU tensors of float32, float64,
float16, bfloat16 (tensors), int32 and int64, and return the output (or a
Request with async_op=True). Every rank must call them in the same order.
"""
import atexit
import ctypes
import itertools
import os
import threading
import weakref

from . import _lib
from ._buffers import Buf, as_buf, empty_like, op_code, same_dtype
from .errors import TerseError, check
from .request import Request, Waiter

L = _lib.lib
_live = weakref.WeakSet()
_store_ids = itertools.count()


def _enc(s):
    return None if s is None else str(s).encode()


class Comm:
    """A terse communicator. Derived communicators share the world's context."""

    def __init__(self, rank=None, size=None, root_addr=None, secret=None, transport=None,
                 timeout=None, boot_timeout=None, host_id=None, progress_thread=True, _oob=None):
        p = _lib.CommParams()
        L.terse_comm_params_init(ctypes.byref(p))
        if (rank is None) != (size is None):
            raise ValueError("terse: give both rank and size, or neither (environment)")
        if size is not None:
            p.rank, p.size = int(rank), int(size)
        p.root_addr, p.secret = _enc(root_addr), _enc(secret)
        p.transport, p.host_id = _enc(transport), _enc(host_id)
        p.timeout_sec = float(timeout or 0)
        p.boot_timeout_sec = float(boot_timeout or 0)
        # The completion thread and overlap with compute need it; the
        # environment (TERSE_PROGRESS_THREAD) decides when None is passed.
        p.progress_thread = {True: 1, False: -1, None: 0}[progress_thread]
        self._oob_keep = None
        if _oob is not None:
            p.oob = _oob.coll
            self._oob_keep = _oob
        ptr = ctypes.c_void_p()
        st = L.terse_comm_create(ctypes.byref(p), ctypes.byref(ptr))
        if _oob is not None and _oob.error is not None:
            raise TerseError(st or -4, "terse_comm_create: the out-of-band allgather failed: %r"
                             % (_oob.error,))
        check(st, "terse_comm_create")
        self._adopt(ptr, None)

    @classmethod
    def _derived(cls, ptr, parent):
        c = cls.__new__(cls)
        c._oob_keep = None
        c._adopt(ptr, parent)
        return c

    def _adopt(self, ptr, parent):
        self._ptr = ptr
        self._pid = os.getpid()
        self._world = parent._world if parent is not None else self
        self._waiter = None
        self._waiter_lock = threading.Lock()
        self.rank = L.terse_comm_rank(ptr)
        self.size = L.terse_comm_size(ptr)
        _live.add(self)

    # -- construction from other channels ------------------------------------
    @classmethod
    def from_oob(cls, allgather, rank, size, **kw):
        """allgather(data: bytes) -> list of size bytes objects (rank r's at r),
        over a channel the job already has (a Store, MPI, a file system)."""
        return cls(_oob=_Oob(allgather, rank, size), **kw)

    @classmethod
    def from_store(cls, store, rank, size, prefix=None, **kw):
        """Bootstrap through a torch.distributed Store (TCPStore, FileStore,
        PrefixStore...). Every rank must use the same prefix (default: the
        n-th from_store call of the process)."""
        prefix = prefix or "terse/%d" % next(_store_ids)
        gen = itertools.count()

        def allgather(data):
            g = next(gen)
            store.set("%s/%d/%d" % (prefix, g, rank), data)
            return [bytes(store.get("%s/%d/%d" % (prefix, g, r))) for r in range(size)]
        return cls.from_oob(allgather, rank, size, **kw)

    @classmethod
    def from_mpi(cls, mpi_comm, **kw):
        """From an mpi4py communicator (its allgather carries the bootstrap)."""
        return cls.from_oob(lambda b: list(mpi_comm.allgather(b)), mpi_comm.Get_rank(),
                            mpi_comm.Get_size(), **kw)

    # -- life cycle -----------------------------------------------------------
    def _usable(self):
        return self._ptr is not None and self._pid == os.getpid()

    def _check_usable(self):
        if self._ptr is None:
            raise ValueError("terse: the communicator was closed")
        if self._pid != os.getpid():
            raise RuntimeError("terse: this communicator belongs to process %d; a forked child "
                               "(a DataLoader worker) cannot use its parent's connections - "
                               "create a communicator in the child" % self._pid)

    def close(self):
        """Release the communicator (local). Others over the context stay."""
        if self._ptr is None:
            return
        if self._pid != os.getpid():  # a forked child: the connections are the parent's
            self._ptr = None
            return
        if self._world is self and self._waiter is not None:
            self._waiter.stop()
            self._waiter = None
        L.terse_comm_destroy(self._ptr)
        self._ptr = None

    destroy = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _world_waiter(self):
        w = self._world
        with w._waiter_lock:
            if w._waiter is None:
                w._waiter = Waiter()
            return w._waiter

    # -- properties -----------------------------------------------------------
    def __repr__(self):
        state = "closed" if self._ptr is None else self.transport
        return "<terse.Comm rank %d of %d, %s>" % (self.rank, self.size, state)

    @property
    def transport(self):
        self._check_usable()
        return L.terse_comm_transport(self._ptr).decode()

    @property
    def local_rank(self):
        return L.terse_comm_local_rank(self._ptr)

    @property
    def local_size(self):
        return L.terse_comm_local_size(self._ptr)

    @property
    def node_count(self):
        return L.terse_comm_node_count(self._ptr)

    def error(self):
        """(status name or None, detail string or None) of the sticky error."""
        d = ctypes.c_char_p()
        st = L.terse_comm_error(self._ptr, ctypes.byref(d))
        from .errors import STATUS_NAMES
        return (None if st == 0 else STATUS_NAMES.get(st, str(st)),
                d.value.decode(errors="replace") if d.value else None)

    def stats(self):
        s = _lib.CommStats()
        self._call(L.terse_comm_stats, "terse_comm_stats", self._ptr, ctypes.byref(s))
        return {n: getattr(s, n) for n, _ in _lib.CommStats._fields_}

    def _call(self, fn, what, *args):
        self._check_usable()
        check(fn(*args), what, self._ptr)

    # -- communicators from communicators -------------------------------------
    def _new(self, fn, what, *args):
        out = ctypes.c_void_p()
        self._call(fn, what, self._ptr, *args, ctypes.byref(out))
        return Comm._derived(out, self) if out.value else None

    def split(self, color, key=0):
        """color None (MPI_UNDEFINED) takes part and gets None."""
        c = -32766 if color is None else int(color)
        return self._new(L.terse_comm_split, "terse_comm_split", c, int(key))

    def dup(self):
        return self._new(L.terse_comm_dup, "terse_comm_dup")

    def create_group(self, ranks):
        """Called by the listed ranks only."""
        arr = (ctypes.c_int * len(ranks))(*ranks)
        return self._new(L.terse_comm_create_group, "terse_comm_create_group", len(ranks), arr)

    def split_node(self, key=0):
        """The ranks on this host (MPI_COMM_TYPE_SHARED)."""
        return self._new(L.terse_comm_split_type, "terse_comm_split_type", 1, int(key))

    def shrink(self):
        """After a PeerFailed/Timeout: the survivors' communicator (ULFM)."""
        return self._new(L.terse_comm_shrink, "terse_comm_shrink")

    # -- dense collectives ----------------------------------------------------
    def _run(self, what, blocking, start, args, keep, result, async_op):
        self._check_usable()
        if not async_op:
            check(blocking(self._ptr, *args), what, self._ptr)
            return result
        req = ctypes.c_void_p()
        check(start(self._ptr, *args, ctypes.byref(req)), what, self._ptr)
        return Request(self, req, keep, what, result)

    def allreduce(self, x, op="sum", out=None, async_op=False):
        s = as_buf(x, "allreduce input", writeable=out is None)
        o = s if out is None else as_buf(out, "allreduce output", writeable=True)
        same_dtype(s, o, "allreduce")
        if o.count != s.count:
            raise ValueError("terse: allreduce output has %d elements, input %d" % (o.count, s.count))
        return self._run("terse_allreduce", L.terse_allreduce, L.terse_allreduce_start,
                         (s.ptr, o.ptr, s.count, s.dtype, op_code(op)), (s, o), o.obj, async_op)

    def reduce(self, x, root=0, op="sum", out=None, async_op=False):
        s = as_buf(x, "reduce input", writeable=out is None)
        o = s if out is None else as_buf(out, "reduce output", writeable=True)
        same_dtype(s, o, "reduce")
        return self._run("terse_reduce", L.terse_reduce, L.terse_reduce_start,
                         (s.ptr, o.ptr, s.count, s.dtype, op_code(op), int(root)), (s, o), o.obj,
                         async_op)

    def broadcast(self, x, root=0, async_op=False):
        b = as_buf(x, "broadcast buffer", writeable=True)
        return self._run("terse_broadcast", L.terse_broadcast, L.terse_broadcast_start,
                         (b.ptr, b.ptr, b.count, b.dtype, int(root)), (b,), b.obj, async_op)

    def reduce_scatter(self, x, op="sum", out=None, async_op=False):
        """x holds size blocks; returns this rank's reduced block."""
        s = as_buf(x, "reduce_scatter input")
        if s.count % self.size:
            raise ValueError("terse: reduce_scatter input of %d elements is not %d equal blocks"
                             % (s.count, self.size))
        n = s.count // self.size
        out = empty_like(x, n) if out is None else out
        o = as_buf(out, "reduce_scatter output", writeable=True)
        same_dtype(s, o, "reduce_scatter")
        if o.count != n:
            raise ValueError("terse: reduce_scatter output needs %d elements, has %d" % (n, o.count))
        return self._run("terse_reduce_scatter", L.terse_reduce_scatter, L.terse_reduce_scatter_start,
                         (s.ptr, o.ptr, n, s.dtype, op_code(op)), (s, o), o.obj, async_op)

    def allgather(self, x, out=None, async_op=False):
        """Returns the size * len(x) concatenation of every rank's x."""
        s = as_buf(x, "allgather input")
        out = empty_like(x, s.count * self.size) if out is None else out
        o = as_buf(out, "allgather output", writeable=True)
        same_dtype(s, o, "allgather")
        if o.count != s.count * self.size:
            raise ValueError("terse: allgather output needs %d elements, has %d"
                             % (s.count * self.size, o.count))
        return self._run("terse_allgather", L.terse_allgather, L.terse_allgather_start,
                         (s.ptr, o.ptr, s.count, s.dtype), (s, o), o.obj, async_op)

    def allgatherv(self, x, counts, out=None, async_op=False):
        """Rank r contributes counts[r] elements (the same list on every rank).
        Non-blocking, it runs as an alltoallv sending x to every rank."""
        s = as_buf(x, "allgatherv input")
        counts = [int(c) for c in counts]
        if len(counts) != self.size or s.count != counts[self.rank]:
            raise ValueError("terse: allgatherv needs %d counts with counts[rank] = len(x)" % self.size)
        out = empty_like(x, sum(counts)) if out is None else out
        o = as_buf(out, "allgatherv output", writeable=True)
        same_dtype(s, o, "allgatherv")
        if o.count != sum(counts):
            raise ValueError("terse: allgatherv output needs %d elements" % sum(counts))
        if not async_op:
            rc = (ctypes.c_size_t * self.size)(*counts)
            self._call(L.terse_allgatherv, "terse_allgatherv", self._ptr, s.ptr, s.count, o.ptr, rc, None,
                       s.dtype)
            return o.obj
        # every block of the send side is x itself (displacement 0)
        return self._v("terse_allgatherv", s, [s.count] * self.size, o, counts, o.obj, True,
                       sdispls=[0] * self.size)

    def alltoall(self, x, out=None, async_op=False):
        """Block p of x goes to rank p; block q of the result came from rank q."""
        s = as_buf(x, "alltoall input")
        if s.count % self.size:
            raise ValueError("terse: alltoall input of %d elements is not %d equal blocks"
                             % (s.count, self.size))
        out = empty_like(x, s.count) if out is None else out
        o = as_buf(out, "alltoall output", writeable=True)
        same_dtype(s, o, "alltoall")
        if o.count != s.count:
            raise ValueError("terse: alltoall output needs %d elements" % s.count)
        return self._run("terse_alltoall", L.terse_alltoall, L.terse_alltoall_start,
                         (s.ptr, o.ptr, s.count // self.size, s.dtype), (s, o), o.obj, async_op)

    def alltoallv(self, x, sendcounts, recvcounts, out=None, async_op=False):
        """sendcounts[p] elements of x (in rank order) go to rank p;
        recvcounts[q] elements of the result came from rank q."""
        s = as_buf(x, "alltoallv input")
        sc, rc = [int(c) for c in sendcounts], [int(c) for c in recvcounts]
        if len(sc) != self.size or len(rc) != self.size or sum(sc) != s.count:
            raise ValueError("terse: alltoallv needs %d send and receive counts, the send counts "
                             "summing to len(x)" % self.size)
        out = empty_like(x, sum(rc)) if out is None else out
        o = as_buf(out, "alltoallv output", writeable=True)
        same_dtype(s, o, "alltoallv")
        if o.count != sum(rc):
            raise ValueError("terse: alltoallv output needs %d elements" % sum(rc))
        return self._v("terse_alltoallv", s, sc, o, rc, o.obj, async_op)

    def gather(self, x, root=0, out=None, async_op=False):
        """The root gets the size * len(x) concatenation of every rank's x;
        the other ranks get None. Runs as an alltoallv in which every rank
        sends only to the root."""
        s = as_buf(x, "gather input")
        root = self._root(root, "gather")
        n, me = s.count, self.rank == root
        o = Buf(None, 0, s.dtype, None)
        if me:
            out = empty_like(x, n * self.size) if out is None else out
            o = as_buf(out, "gather output", writeable=True)
            same_dtype(s, o, "gather")
            if o.count != n * self.size:
                raise ValueError("terse: gather output needs %d elements, has %d" % (n * self.size, o.count))
        sc = [n if p == root else 0 for p in range(self.size)]
        rc = [n if me else 0] * self.size
        return self._v("terse_gather", s, sc, o, rc, o.obj, async_op)

    def scatter(self, x, out, root=0, async_op=False):
        """Block r of the root's x (size equal blocks) lands in rank r's out;
        the other ranks pass x=None. Runs as an alltoallv from the root."""
        root = self._root(root, "scatter")
        o = as_buf(out, "scatter output", writeable=True)
        n, me = o.count, self.rank == root
        s = Buf(None, 0, o.dtype, None)
        if me:
            s = as_buf(x, "scatter input")
            same_dtype(s, o, "scatter")
            if s.count != n * self.size:
                raise ValueError("terse: scatter input needs %d elements (%d blocks of out's %d), has %d"
                                 % (n * self.size, self.size, n, s.count))
        sc = [n if me else 0] * self.size
        rc = [n if p == root else 0 for p in range(self.size)]
        return self._v("terse_scatter", s, sc, o, rc, o.obj, async_op)

    def _v(self, what, s, sc, o, rc, result, async_op, sdispls=None):
        """An alltoallv (terse builds its schedule from the counts when it starts)."""
        arr = ctypes.c_size_t * self.size
        sd = arr(*sdispls) if sdispls is not None else None
        return self._run(what, L.terse_alltoallv, L.terse_alltoallv_start,
                         (s.ptr, arr(*sc), sd, o.ptr, arr(*rc), None, s.dtype), (s, o), result, async_op)

    def _root(self, root, what):
        root = int(root)
        if not 0 <= root < self.size:
            raise ValueError("terse: %s root %d is not a rank of this communicator (size %d)"
                             % (what, root, self.size))
        return root

    def barrier(self):
        self._call(L.terse_barrier, "terse_barrier", self._ptr)

    def register(self, x):
        """Register x's memory with the device (verbs: collectives on it send
        without a bounce copy; TCP: accepted, costs nothing). Keeps x alive
        until the registration is closed. Its pages are the device's: with
        rdma-core's fork support on (kernels before 5.13) a forked child does
        not see them."""
        b = as_buf(x, "registered buffer")
        reg = ctypes.c_void_p()
        self._call(L.terse_mem_register, "terse_mem_register", self._ptr, b.ptr, b.nbytes, ctypes.byref(reg))
        return Registration(self, reg, b)

    def allreduce_init(self, x, op="sum", out=None):
        """A persistent allreduce (MPI_Allreduce_init): start() it every step."""
        s = as_buf(x, "allreduce input", writeable=out is None)
        o = s if out is None else as_buf(out, "allreduce output", writeable=True)
        same_dtype(s, o, "allreduce_init")
        req = ctypes.c_void_p()
        self._call(L.terse_allreduce_init, "terse_allreduce_init", self._ptr, s.ptr, o.ptr, s.count,
                   s.dtype, op_code(op), ctypes.byref(req))
        return Plan(self, req, (s, o), o.obj)

    def eb_allreduce(self, x, bound, mode="abs", out=None):
        """Error-bounded sum (float32/float64): |result - exact| <= bound
        (mode "abs") or bound * (max - min of all inputs) ("rel"). Returns
        (out, info dict)."""
        s = as_buf(x, "eb_allreduce input", writeable=out is None)
        o = s if out is None else as_buf(out, "eb_allreduce output", writeable=True)
        m = {"abs": 1, "rel": 2}.get(mode)
        if m is None:
            raise ValueError("terse: eb_allreduce mode must be 'abs' or 'rel', not %r" % (mode,))
        info = _lib.EbInfo()
        self._call(L.terse_eb_allreduce, "terse_eb_allreduce", self._ptr, s.ptr, o.ptr, s.count,
                   s.dtype, m, float(bound), ctypes.byref(info))
        return o.obj, {n: getattr(info, n) for n, _ in _lib.EbInfo._fields_}


class Registration:
    """A memory registration (Comm.register); close() or `with` releases it."""

    def __init__(self, comm, reg, buf):
        self._comm, self._reg, self._buf = comm, reg, buf

    def close(self):
        if self._reg is not None and self._comm._usable():
            check(L.terse_mem_deregister(self._comm._ptr, self._reg), "terse_mem_deregister", self._comm._ptr)
        self._reg = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Plan:
    """A persistent collective: start() / wait() / test() many times, free()."""

    def __init__(self, comm, req, keep, result):
        self._comm, self._req, self._keep, self._result = comm, req, keep, result

    def start(self):
        self._comm._check_usable()
        check(L.terse_start(self._req), "terse_start", self._comm._ptr)
        return self

    def wait(self):
        self._comm._check_usable()
        check(L.terse_request_wait(self._req), "terse plan", self._comm._ptr)
        return self._result

    def test(self):
        flag = ctypes.c_int(0)
        st = L.terse_request_test(self._req, ctypes.byref(flag))
        if st not in (0, 1):
            check(st, "terse plan", self._comm._ptr)
        return bool(flag.value)

    def free(self):
        if self._req is not None and self._comm._usable():
            check(L.terse_request_free(self._req), "terse_request_free", self._comm._ptr)
        self._req = None


class _Oob:
    """A Python allgather as terse's out-of-band hook (terse_oob_coll_t)."""

    def __init__(self, allgather, rank, size):
        self.fn, self.rank, self.size, self.error = allgather, int(rank), int(size), None
        self._cb = (_lib.OOB_ALLGATHER(self._allgather), _lib.OOB_REQ(lambda r: 0),
                    _lib.OOB_REQ(lambda r: 0))
        self.coll = _lib.OobColl(self._cb[0], self._cb[1], self._cb[2], None, self.size, self.rank)

    def _allgather(self, sbuf, rbuf, length, info, request):
        try:
            parts = self.fn(ctypes.string_at(sbuf, length))
            if len(parts) != self.size or any(len(p) != length for p in parts):
                raise ValueError("the allgather returned %d parts of sizes %s, expected %d of %d bytes"
                                 % (len(parts), sorted({len(p) for p in parts}), self.size, length))
            for r, part in enumerate(parts):
                ctypes.memmove(rbuf + r * length, part, length)
            request[0] = 1  # any non-NULL: complete at once
            return 0
        except Exception as e:  # noqa: BLE001 - reported by Comm.__init__
            self.error = e
            return -4


def _close_all():
    # At exit, before the interpreter freezes daemon threads (a completion
    # thread joined after that would never answer): derived communicators
    # first, then the worlds.
    for c in sorted(list(_live), key=lambda c: c._world is c):
        try:
            c.close()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


atexit.register(_close_all)


def _forked_child():
    # Threads do not survive fork: the child must never touch the parent's
    # contexts (Comm._check_usable says so), and exits without closing them.
    for c in list(_live):
        if c._world is c:
            c._waiter = None


os.register_at_fork(after_in_child=_forked_child)
