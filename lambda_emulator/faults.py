"""Fault hooks for tests (no such thing in Lambda): a streaming handler asks for a fault on its
response stream, and the server applies it to the next event stream frame it sends.

    response_stream.fault("corrupt_crc", where="message" | "prelude")  damages the next frame's CRC
    response_stream.fault("stall", seconds=S)                          holds the next frame back
    response_stream.fault("close")                                     drops the connection, with
                                                                       no InvokeComplete

The worker sends ("fault", kind, options) down its pipe (runtime.ResponseStream.fault); the
server's eventstream.StreamSender keeps them in a FaultPlan. A plain Invoke (buffered) ignores them.
"""

__all__ = ["FAULT_KINDS", "check_fault", "FaultPlan"]

FAULT_KINDS = ("corrupt_crc", "stall", "close")


def check_fault(kind):
    """Raise ValueError for a fault kind the emulator does not know."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {kind!r}")


class FaultPlan:
    """The faults asked for and not yet applied, for one streamed answer."""

    def __init__(self):
        self.corrupt = None            # "prelude" | "message": the CRC the next frame gets wrong
        self.stall = 0.0               # seconds to wait before the next frame

    def ask(self, kind, options):
        """Record a fault; True if it is "close" (the caller drops the connection now)."""
        options = options or {}
        if kind == "corrupt_crc":
            self.corrupt = "prelude" if options.get("where") == "prelude" else "message"
        elif kind == "stall":
            self.stall = float(options.get("seconds", 1.0))
        elif kind == "close":
            return True
        return False

    def take_corruption(self):
        corrupt, self.corrupt = self.corrupt, None
        return corrupt

    def take_stall(self):
        stall, self.stall = self.stall, 0.0
        return stall
