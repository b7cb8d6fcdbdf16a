#!/usr/bin/python3
"""Run N ranks of a Python program on this host, as torchrun would:

    launch.py [-n N] [-t SECONDS] [--env VAR=VALUE ...] program.py [args...]

Every rank gets TERSE_RANK/TERSE_SIZE, RANK/WORLD_SIZE/LOCAL_RANK and a
fresh MASTER_ADDR:MASTER_PORT (torch) and TERSE_ROOT_ADDR (terse). Output is
printed per rank, prefixed; the exit status is 0 only if every rank exited
0. A run past the time bound is killed (status 124) so nothing hangs.
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2)
    ap.add_argument("-t", type=float, default=300)
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("program")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    port, tport = free_port(), free_port()
    here = os.path.dirname(os.path.abspath(__file__))
    procs = []
    for r in range(a.n):
        env = dict(os.environ, TERSE_RANK=str(r), TERSE_SIZE=str(a.n), RANK=str(r),
                   WORLD_SIZE=str(a.n), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), TERSE_ROOT_ADDR="127.0.0.1:%d" % tport)
        env.setdefault("TERSE_TIMEOUT", "60")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(here),
                                                          os.environ.get("PYTHONPATH")]))
        for kv in a.env:
            k, _, v = kv.partition("=")
            env[k] = v
        out = tempfile.TemporaryFile()
        procs.append((subprocess.Popen([sys.executable, a.program] + a.args, env=env, stdout=out,
                                       stderr=subprocess.STDOUT), out))
    deadline = time.time() + a.t
    status = 0
    for r, (p, out) in enumerate(procs):
        try:
            rc = p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for q, _ in procs:
                q.kill()
            rc = 124
            print("launch.py: rank %d still running after %.0f s: killed" % (r, a.t))
        if rc != 0 and status == 0:
            status = rc if rc > 0 else 1
    for r, (p, out) in enumerate(procs):
        p.wait()
        out.seek(0)
        for line in out.read().decode(errors="replace").splitlines():
            print("[%d] %s" % (r, line))
        if p.returncode != 0:
            print("[%d] exit status %d" % (r, p.returncode))
    sys.exit(status)


if __name__ == "__main__":
    main()
