"""Lambda's limits as the emulator enforces them, and the emulator's own bounds: one home each."""

MAX_REQUEST_BYTES = 6291456          # synchronous invocation payload (6 MB)
MAX_EVENT_REQUEST_BYTES = 1048576    # asynchronous invocation payload (1 MB)
MAX_RESPONSE_BYTES = 6291556         # what Lambda's error message names as the maximum
MAX_DRAIN_BYTES = 64 * 1024 * 1024   # larger request bodies are not even read: 413 and close
MAX_STREAM_BYTES = 200 * 1024 * 1024  # a streamed response (Lambda's maximum)
STREAM_CHUNK = 64 * 1024             # the largest PayloadChunk the emulator sends
TAIL_BYTES = 4096                    # X-Amz-Log-Result: the last 4 KB of the log
LOG_KEEP_BYTES = 1024 * 1024         # per invocation, what is kept of a handler's output
INIT_TIMEOUT = 10.0                  # Lambda's limit for the init phase (module import)
KEEPALIVE_IDLE_TIMEOUT = 300.0       # an idle client connection is closed after this
STOP_GRACE = 2.0                     # SIGTERM to a worker, then SIGKILL after this
