"""A local AWS Lambda emulator: the Invoke API on loopback, Python handlers in worker processes.

    python -m lambda_emulator [--port 9001] [--path DIR] --function NAME=module:handler ...
    python -m lambda_emulator --config functions.json

boto3 (endpoint_url=...), the AWS CLI (--endpoint-url ...) and the VMOD talk to it as to Lambda:

  POST /2015-03-31/functions/{FunctionName}/invocations[?Qualifier=...]
       X-Amz-Invocation-Type: RequestResponse (200) | Event (202, runs in the background)
                              | DryRun (204)
       X-Amz-Log-Type: Tail (X-Amz-Log-Result: base64 of the last 4 KB of the invocation's log)
       X-Amz-Client-Context: base64 JSON, handed to the handler as context.client_context
  POST /2021-11-15/functions/{FunctionName}/response-streaming-invocations[?Qualifier=...]
       InvokeWithResponseStream: 200 with an application/vnd.amazon.eventstream body of
       PayloadChunk events and a final InvokeComplete {ErrorCode, ErrorDetails, LogResult}

Signatures are not checked. Errors are sent in Lambda's wire format (status, x-amzn-ErrorType and
JSON body) so that botocore raises the same exceptions as against Lambda; function errors (handler
exception, timeout, crash, oversized response) answer 200 with X-Amz-Function-Error: Unhandled.

Response streaming: a handler decorated with @streamify_response is called as
handler(event, response_stream, context) and writes its response as it goes, like Node's
awslambda.streamifyResponse: response_stream.write(bytes or str), .set_content_type(),
.close(); HttpResponseStream.from_(response_stream, {"statusCode": .., "headers": {..},
"cookies": [..]}) writes the HTTP-integration prelude (JSON, 8 NUL bytes) that function URLs read.
Writes block while the client does not read (the pipe to the worker and the socket fill up), so a
handler can stream any amount from a generator in bounded memory. Invoked with the plain Invoke API,
a streaming handler's output is collected into one payload (6 MB limit). An ordinary handler
invoked with InvokeWithResponseStream has its return value streamed. A handler exception, a timeout
or a crash after the first bytes end the stream with InvokeComplete{ErrorCode, ErrorDetails}.
Fault injection for tests (not in Lambda): response_stream.fault("corrupt_crc", where="message" |
"prelude") damages the next frame's CRC; fault("stall", seconds=S) holds the next frame back;
fault("close") drops the connection without InvokeComplete (faults.py).

Outside the AWS namespace, for tests: GET /emulator/stats (counters as JSON), POST /emulator/reset.

Each function has its own pool of worker processes (multiprocessing, "forkserver" where available,
else "spawn"), created on demand and reused, at most reserved_concurrency of them (default 10). A
worker imports the handler module once (the cold start), then serves one invocation at a time.
What a handler writes to stdout/stderr (file descriptors 1 and 2, so C code and subprocesses
too) and logs with `logging` goes to the invocation's log. A worker that times out is killed
(with its process group); one that dies is replaced. As with all multiprocessing code, a script
that creates an Emulator must guard its entry point with `if __name__ == "__main__":`.

From Python:

    from lambda_emulator import Emulator, FunctionConfig
    with Emulator({"echo": FunctionConfig("app:echo", path=["examples"])}) as emu:
        boto3.client("lambda", endpoint_url=emu.url, ...).invoke(FunctionName="echo", Payload=b"{}")

Only the standard library is used: the package installs and runs without vmod_lambda
(`pip install ./lambda_emulator`, which also installs the `vmod-lambda-emulator` script).

Modules, one concern each:

    config.py       FunctionConfig, the JSON config file, EmulatorConfigError, defaults
    limits.py       Lambda's payload limits and the emulator's own bounds
    server.py       the Invoke API server (HTTP, request validation, Lambda's error format)
    emulator.py     Emulator: the server thread, concurrency, Event invocations, counters
    workers.py      worker processes seen from the emulator: pools, one invocation's run and log
    runtime.py      inside a worker: the handler's runtime (context, streamify_response, ...)
    eventstream.py  the event stream writer (frames, PayloadChunk, InvokeComplete, StreamSender)
    faults.py       the fault hooks of streaming handlers (tests only)
    cli.py          the command line
"""

from .config import (DEFAULT_ACCOUNT_ID, DEFAULT_HOST, DEFAULT_MEMORY_SIZE, DEFAULT_PORT,
                     DEFAULT_REGION, DEFAULT_RESERVED_CONCURRENCY, DEFAULT_TIMEOUT,
                     EmulatorConfigError, FunctionConfig, load_config)
from .limits import (MAX_EVENT_REQUEST_BYTES, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
                     MAX_STREAM_BYTES)
from .runtime import HttpResponseStream, LambdaContext, ResponseStream, streamify_response
from .emulator import Emulator
from .cli import main

__version__ = "0.1.0"

__all__ = ["Emulator", "FunctionConfig", "EmulatorConfigError", "load_config", "main",
           "streamify_response", "HttpResponseStream", "ResponseStream", "LambdaContext",
           "MAX_REQUEST_BYTES", "MAX_EVENT_REQUEST_BYTES", "MAX_RESPONSE_BYTES", "MAX_STREAM_BYTES",
           "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_REGION", "DEFAULT_ACCOUNT_ID",
           "DEFAULT_TIMEOUT", "DEFAULT_MEMORY_SIZE", "DEFAULT_RESERVED_CONCURRENCY"]
