"""terse statuses as Python exceptions.

Every failing call raises a TerseError subclass carrying the status (its
number and name), terse's message for it and, when the communicator has one,
its detail string naming the peer and the reason (terse_comm_error).
Caller errors are also ValueError, timeouts also TimeoutError, so ordinary
`except` clauses work.
"""
from . import _lib

# (value, name) as in TERSE_STATUS_LIST of terse.h
STATUS_NAMES = {
    0: "OK", 1: "IN_PROGRESS", -1: "INVALID_ARG", -2: "NO_MEMORY", -3: "UNSUPPORTED",
    -4: "SYSTEM", -5: "TIMEOUT", -6: "PEER_FAILED", -7: "MISMATCH", -8: "PROTOCOL", -9: "AUTH",
    -10: "REMOTE_ABORT", -11: "MEMLOCK", -12: "NO_DEVICE", -13: "BUSY",
}


class TerseError(RuntimeError):
    """A terse call failed: .status (int), .name ("PEER_FAILED"), .detail (str or None)."""

    def __init__(self, status, what, detail=None):
        self.status = status
        self.name = STATUS_NAMES.get(status, str(status))
        self.detail = detail
        msg = "%s: %s (TERSE_ERR_%s)" % (what, _lib.lib.terse_strerror(status).decode(), self.name)
        if detail:
            msg += ": " + detail
        super().__init__(msg)


class InvalidArgument(TerseError, ValueError):
    pass


class Mismatch(TerseError, ValueError):
    pass


class Timeout(TerseError, TimeoutError):
    pass


class PeerFailed(TerseError, ConnectionError):
    pass


class Busy(TerseError):
    pass


class Unsupported(TerseError):
    pass


_CLASSES = {-1: InvalidArgument, -7: Mismatch, -5: Timeout, -6: PeerFailed, -10: PeerFailed,
            -13: Busy, -3: Unsupported}


def comm_detail(comm_ptr):
    """The communicator's sticky error detail, or None."""
    if not comm_ptr:
        return None
    d = _lib.c_char_p()
    if _lib.lib.terse_comm_error(comm_ptr, _lib.ctypes.byref(d)) != 0 and d.value:
        return d.value.decode(errors="replace")
    return None


def check(status, what, comm_ptr=None):
    """Raise the exception for a failed status; returns None on success."""
    if status == 0:
        return
    detail = comm_detail(comm_ptr)
    raise _CLASSES.get(status, TerseError)(status, what, detail)
