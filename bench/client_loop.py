"""The bare client loop, outside Varnish: vmod_lambda's Invoker (the code the worker threads run)
invoking the origin's fixed function as fast as it can, from THREADS threads, for DURATION seconds.

    python bench/client_loop.py URL TRANSPORT THREADS DURATION

Prints one JSON object: invocations, rate, CPU ms per invocation (this process), errors.
"""

import inspect
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vmod_lambda.config import validate_backend  # noqa: E402
from vmod_lambda.invoker import InvokeError, Invoker  # noqa: E402


def main():
    url, transport, threads, duration = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    kw = {"pool_size": max(threads, 1)}
    if "transport" in inspect.signature(validate_backend).parameters:
        kw["transport"] = transport
    elif transport != "boto3":
        print(json.dumps({"error": f"transport {transport!r} is not supported by this build"}))
        return 2
    inv = Invoker(validate_backend("bench", "bench-fn", "us-east-1", endpoint_url=url, **kw))
    payload = b'{"bench":"client loop"}'
    inv.invoke(payload)                       # connect and warm up outside the measurement
    counts = [0] * threads
    errors = [0] * threads
    stop = time.perf_counter() + duration
    start = threading.Barrier(threads + 1)

    def loop(i):
        start.wait()
        n = e = 0
        while time.perf_counter() < stop:
            try:
                inv.invoke(payload)
                n += 1
            except InvokeError:
                e += 1
        counts[i], errors[i] = n, e

    ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    c0 = time.process_time()
    t0 = time.perf_counter()
    stop = t0 + duration
    start.wait()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    n = sum(counts)
    print(json.dumps({"requests": n, "errors": sum(errors), "elapsed": elapsed,
                      "rps": n / elapsed, "cpu_ms_per_req": cpu * 1000 / n if n else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
