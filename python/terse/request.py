"""Non-blocking requests: wait(), test(), callbacks and torch futures.

A Request keeps the buffers it was started on alive until it completes. The
caller either waits for it itself (wait/test) or hands it to the world's
completion thread (add_done_callback, get_future), which blocks in
terse_request_wait with the GIL released and then runs the callbacks - so a
future completes while the caller computes, and nobody busy-waits. With the
progress thread (on by default for Python communicators) the transfer itself
advances without any Python thread.
"""
import collections
import ctypes
import threading

from . import _lib
from .errors import check

L = _lib.lib


class Request:
    """One started collective. result: what wait() returns (the output buffer)."""

    def __init__(self, comm, req, keep, what, result=None, finish=None):
        self._comm = comm          # keeps the communicator (and its context) alive
        self._req = req            # c_void_p
        self._keep = keep          # buffers terse reads or writes until completion
        self._what = what
        self._result = result
        self._finish = finish      # called once on success: returns the result
        self._done = False
        self._error = None
        self._event = None         # set when the completion thread owns the wait
        self._callbacks = []
        self._lock = threading.Lock()

    # -- completion ---------------------------------------------------------
    def _complete(self, status):
        try:
            check(status, self._what, self._comm._ptr)
            if self._finish is not None:
                self._result = self._finish()
        except BaseException as e:  # noqa: BLE001 - handed to the waiter
            self._error = e
        self._done = True
        self._keep = None

    def _blocking_wait(self):
        # ctypes releases the GIL for the call: other Python threads run.
        self._complete(L.terse_request_wait(self._req))

    def wait(self):
        """Block until done; return the result (the output buffer) or raise."""
        if not self._done:
            ev = self._event
            if ev is not None:
                ev.wait()
            else:
                with self._lock:
                    if not self._done:
                        self._comm._check_usable()
                        self._blocking_wait()
        if self._error is not None:
            raise self._error
        return self._result

    def test(self):
        """True once the request finished (then wait() returns at once)."""
        if self._done:
            return True
        if self._event is not None:
            return self._event.is_set()
        with self._lock:
            if self._done:
                return True
            self._comm._check_usable()
            flag = ctypes.c_int(0)
            st = L.terse_request_test(self._req, ctypes.byref(flag))
            if flag.value:
                self._blocking_wait()  # releases it; returns at once
                return True
            if st not in (0, 1):
                self._complete(st)
                return True
            return False

    def is_completed(self):
        return self.test()

    @property
    def done(self):
        return self._done

    def add_done_callback(self, fn):
        """fn(request) runs in the completion thread once the request finished."""
        with self._lock:
            self._callbacks.append(fn)
            if self._event is None:
                self._event = threading.Event()
                if self._done:
                    self._event.set()
                    run = True
                else:
                    self._comm._world_waiter().submit(self)
                    run = False
            else:
                run = self._event.is_set()
        if run:
            fn(self)

    def get_future(self):
        """A torch.futures.Future completed with the result (or the error)."""
        import torch
        fut = torch.futures.Future()

        def done(r):
            if r._error is not None:
                fut.set_exception(r._error)
            else:
                fut.set_result(r._result)
        self.add_done_callback(done)
        return fut

    def _run_callbacks(self):
        self._event.set()
        for fn in self._callbacks:
            try:
                fn(self)
            except Exception as e:  # noqa: BLE001 - never kill the completion thread
                import sys
                print("terse: a request callback raised: %r" % (e,), file=sys.stderr)

    def __del__(self):
        # An abandoned request still owns its buffers in terse: finish it first.
        if not self._done and self._event is None and self._req is not None:
            try:
                if self._comm._usable():
                    self._blocking_wait()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


class Waiter:
    """The completion thread of a world: waits for handed-over requests in
    issue order and runs their callbacks."""

    def __init__(self):
        self._q = collections.deque()
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._main, name="terse-completion", daemon=True)
        self._thread.start()

    def submit(self, req):
        with self._cv:
            self._q.append(req)
            self._cv.notify()

    def _main(self):
        while True:
            with self._cv:
                while not self._q and not self._stop:
                    self._cv.wait()
                if not self._q:
                    return
                req = self._q.popleft()
            with req._lock:
                if not req._done:
                    req._blocking_wait()
            req._run_callbacks()

    def stop(self):
        with self._cv:
            self._stop = True
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)  # a request still running ends by terse's own timeout
