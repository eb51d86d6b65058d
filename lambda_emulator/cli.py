"""The command line: `python -m lambda_emulator` and the `vmod-lambda-emulator` script."""

import argparse
import logging
import signal
import sys
import threading

from .config import (DEFAULT_ACCOUNT_ID, DEFAULT_HOST, DEFAULT_MEMORY_SIZE, DEFAULT_PORT,
                     DEFAULT_REGION, DEFAULT_RESERVED_CONCURRENCY, DEFAULT_TIMEOUT,
                     EmulatorConfigError, FunctionConfig, load_config)
from .emulator import Emulator

__all__ = ["main"]

log = logging.getLogger("lambda_emulator")


def _parse_function_arg(text):
    name, sep, handler = text.partition("=")
    if not sep or not name or not handler:
        raise EmulatorConfigError(f"function {text!r} must be given as NAME=module:handler")
    return name, handler


def _build_arg_parser():
    p = argparse.ArgumentParser(
        prog="python -m lambda_emulator",
        description="Serve the AWS Lambda Invoke API on loopback, running Python handlers locally.",
        epilog="Example: python -m lambda_emulator --path examples echo=app:echo "
               "hello=app:hello  (then: aws lambda invoke --endpoint-url http://127.0.0.1:9001 "
               "--function-name echo --payload '{}' out.json)")
    p.add_argument("functions", nargs="*", metavar="NAME=module:handler",
                   help="a function to serve (same as --function)")
    p.add_argument("-f", "--function", action="append", default=[], metavar="NAME=module:handler",
                   help="a function to serve (repeatable)")
    p.add_argument("-c", "--config", metavar="FILE.json",
                   help='functions from a JSON file: {"functions": {"NAME": {"handler": '
                        '"module:handler", "timeout": 3, "memory_size": 128, '
                        '"reserved_concurrency": 10, "environment": {}, "path": []}}}')
    p.add_argument("-p", "--path", action="append", default=[], metavar="DIR",
                   help="a directory to search for handler modules (repeatable; the current "
                        "directory is always searched last)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="loopback address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help="port (default %(default)s; 0 picks a free one)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="timeout in seconds of the command-line functions (default %(default)g)")
    p.add_argument("--memory-size", type=int, default=DEFAULT_MEMORY_SIZE,
                   help="memory size in MB of the command-line functions (default %(default)s)")
    p.add_argument("--reserved-concurrency", type=int, default=DEFAULT_RESERVED_CONCURRENCY,
                   help="reserved concurrency of the command-line functions (default "
                        "%(default)s)")
    p.add_argument("--region", default=DEFAULT_REGION, help="region in ARNs and AWS_REGION "
                                                           "(default %(default)s)")
    p.add_argument("--account-id", default=DEFAULT_ACCOUNT_ID,
                   help="account ID in ARNs (default %(default)s)")
    p.add_argument("--start-method", choices=("forkserver", "spawn"), default=None,
                   help="multiprocessing start method of the workers (default: forkserver where "
                        "available)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="do not log requests and function output to stderr")
    return p


def main(argv=None):
    """Command line entry point; returns the exit status."""
    parser = _build_arg_parser()
    args = parser.parse_args(argv)
    try:
        functions, paths = {}, []
        if args.config:
            functions, paths = load_config(args.config)
        for text in args.functions + args.function:
            name, handler = _parse_function_arg(text)
            functions[name] = FunctionConfig(
                handler=handler, timeout=args.timeout, memory_size=args.memory_size,
                reserved_concurrency=args.reserved_concurrency).validated(name)
        if not functions:
            raise EmulatorConfigError("no functions: give NAME=module:handler or --config FILE")
        emulator = Emulator(functions, host=args.host, port=args.port,
                            paths=args.path + paths, region=args.region,
                            account_id=args.account_id, start_method=args.start_method,
                            echo_logs=not args.quiet)
    except EmulatorConfigError as e:
        parser.error(str(e))     # exits with status 2

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(message)s", stream=sys.stderr)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            emulator.start()
        except OSError as e:
            print(f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: "
                  f"{e.strerror or e}", file=sys.stderr)
            return 1
        print(emulator.url, flush=True)
        for name, cfg in emulator.functions.items():
            log.info("function %s: %s (timeout %gs, memory %d MB, reserved concurrency %d)",
                     name, cfg.handler, cfg.timeout, cfg.memory_size, cfg.reserved_concurrency)
        while not stop.wait(0.5):
            if not emulator._thread.is_alive():
                log.error("the server thread ended unexpectedly")
                return 1
        log.info("stopping")
        return 0
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
