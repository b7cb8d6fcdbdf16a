"""A minimal multi-rank test harness: every rank runs the same cases in the
same order; each prints "PASS: name" or "FAIL: name: why" and the program
exits 1 if any case failed on this rank.

    from harness import case, main
    @case
    def allreduce_sum(comm): ...
    main(make_comm)
"""
import os
import sys
import time
import traceback

_cases = []


def case(fn=None, *, ranks=None):
    """Register a case; ranks: the rank counts it runs at (default any)."""
    def reg(f):
        _cases.append((f, ranks))
        return f
    return reg(fn) if fn is not None else reg


def size():
    return int(os.environ.get("TERSE_SIZE", os.environ.get("WORLD_SIZE", "1")))


def rank():
    return int(os.environ.get("TERSE_RANK", os.environ.get("RANK", "0")))


def main(setup=None, teardown=None):
    ctx = setup() if setup else None
    only = os.environ.get("TERSE_TEST_FILTER")
    fails = 0
    for fn, ranks in _cases:
        name = "%s (%d ranks)" % (fn.__name__, size())
        if ranks is not None and size() not in ranks:
            continue
        if only and only not in fn.__name__:
            continue
        t0 = time.time()
        try:
            fn(ctx) if ctx is not None else fn()
            print("PASS: %s %.2fs" % (name, time.time() - t0), flush=True)
        except Exception:  # noqa: BLE001 - reported as the case's failure
            fails += 1
            print("FAIL: %s: %s" % (name, traceback.format_exc().strip().replace("\n", "\n    ")),
                  flush=True)
    if teardown is not None:  # e.g. a barrier, then close: nobody leaves while a peer still talks
        try:
            teardown(ctx)
        except Exception:  # noqa: BLE001
            fails += 1
            print("FAIL: teardown: %s" % traceback.format_exc().strip(), flush=True)
    sys.stdout.flush()
    sys.exit(1 if fails else 0)


def assert_raises(exc, fn, *args, match=None, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        if match and match not in str(e):
            raise AssertionError("%s raised, but %r is not in %r" % (exc.__name__, match, str(e)))
        return e
    raise AssertionError("%s was not raised" % exc.__name__)
