"""Function configuration: FunctionConfig, the JSON config file, and the checks of names, handlers,
limits and the listening address. Errors raise EmulatorConfigError naming what to fix."""

import ipaddress
import json
import os
import re
from dataclasses import dataclass, field

__all__ = ["EmulatorConfigError", "FunctionConfig", "load_config", "split_handler", "loopback_host",
           "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_REGION", "DEFAULT_ACCOUNT_ID",
           "DEFAULT_TIMEOUT", "DEFAULT_MEMORY_SIZE", "DEFAULT_RESERVED_CONCURRENCY"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9001
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "123456789012"
DEFAULT_TIMEOUT = 3.0
DEFAULT_MEMORY_SIZE = 128
DEFAULT_RESERVED_CONCURRENCY = 10

_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class EmulatorConfigError(ValueError):
    """A function declaration, config file or option is invalid; str() says what to fix."""


@dataclass
class FunctionConfig:
    """One emulated function; handler is "module:function" (or Lambda's "module.function")."""
    handler: str
    timeout: float = DEFAULT_TIMEOUT
    memory_size: int = DEFAULT_MEMORY_SIZE
    reserved_concurrency: int = DEFAULT_RESERVED_CONCURRENCY
    environment: dict = field(default_factory=dict)
    path: list = field(default_factory=list)

    _KEYS = ("handler", "timeout", "memory_size", "reserved_concurrency", "environment", "path")

    @classmethod
    def from_dict(cls, spec, base_dir=None):
        """From a config file entry (a dict, or just the handler string); relative path entries
        are taken relative to base_dir."""
        if isinstance(spec, str):
            spec = {"handler": spec}
        if not isinstance(spec, dict):
            raise EmulatorConfigError("a function must be an object or a handler string, "
                                      f"not {spec!r}")
        unknown = sorted(set(spec) - set(cls._KEYS))
        if unknown:
            raise EmulatorConfigError(f"unknown key(s) {', '.join(unknown)} "
                                      f"(known: {', '.join(cls._KEYS)})")
        if "handler" not in spec:
            raise EmulatorConfigError("\"handler\" is missing")
        kwargs = dict(spec)
        paths = kwargs.get("path", [])
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise EmulatorConfigError("\"path\" must be a list of directories")
        kwargs["path"] = [os.path.join(base_dir, p) if base_dir else p for p in paths]
        if "environment" in kwargs and kwargs["environment"] is None:
            kwargs["environment"] = {}
        return cls(**kwargs)

    def validated(self, name):
        """Return a checked, normalised copy; raise EmulatorConfigError naming the function."""
        def fail(what):
            raise EmulatorConfigError(f"function {name!r}: {what}")

        if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
            raise EmulatorConfigError(f"function name {name!r} must be 1 to 64 letters, digits, "
                                      "'-' or '_'")
        try:
            split_handler(self.handler)
        except ValueError as e:
            fail(str(e))
        timeout = self.timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                or not 0 < timeout <= 900:
            fail(f"timeout must be a number of seconds in (0, 900], not {timeout!r}")
        memory = self.memory_size
        if isinstance(memory, bool) or not isinstance(memory, int) or not 128 <= memory <= 10240:
            fail(f"memory_size must be an integer from 128 to 10240 (MB), not {memory!r}")
        conc = self.reserved_concurrency
        if isinstance(conc, bool) or not isinstance(conc, int) or not 0 <= conc <= 1000:
            fail(f"reserved_concurrency must be an integer from 0 to 1000, not {conc!r}")
        env = self.environment or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in env.items()):
            fail("environment must map names to string values")
        if any(not k or "=" in k or "\0" in k or "\0" in v for k, v in env.items()):
            fail("environment has an invalid variable name or value")
        paths = [self.path] if isinstance(self.path, str) else list(self.path or [])
        if not all(isinstance(p, str) and p for p in paths):
            fail("path must be a list of directories")
        return FunctionConfig(handler=self.handler, timeout=float(timeout), memory_size=memory,
                              reserved_concurrency=conc, environment=dict(env),
                              path=[os.path.abspath(p) for p in paths])


def split_handler(handler):
    """"module:attr" or Lambda's "module.attr" / "dir/module.attr" -> (module, attr)."""
    if not isinstance(handler, str):
        raise ValueError(f"handler must be a string like module:function, not {handler!r}")
    if ":" in handler:
        module, _, attr = handler.partition(":")
    else:
        module, _, attr = handler.rpartition(".")
    module = module.replace("/", ".")
    ident = r"[A-Za-z_][A-Za-z0-9_]*"
    if not re.match(rf"^{ident}(\.{ident})*$", module) or not re.match(rf"^{ident}(\.{ident})*$",
                                                                       attr):
        raise ValueError(f"handler {handler!r} is not of the form module:function")
    return module, attr


def load_config(path):
    """Read a JSON config file: {"functions": {NAME: {...} or "module:handler"}, "path": [...]}.
    Returns (functions, paths); relative directories are relative to the file's directory."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise EmulatorConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise EmulatorConfigError(f"config file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("functions", {}), dict):
        raise EmulatorConfigError(f"config file {path}: expected "
                                  '{"functions": {NAME: {...}}}')
    unknown = sorted(set(data) - {"functions", "path"})
    if unknown:
        raise EmulatorConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}")
    base = os.path.dirname(os.path.abspath(path))
    functions = {}
    for name, spec in data.get("functions", {}).items():
        try:
            functions[name] = FunctionConfig.from_dict(spec, base_dir=base).validated(name)
        except (EmulatorConfigError, TypeError) as e:
            msg = str(e) if str(e).startswith("function ") else f"function {name!r}: {e}"
            raise EmulatorConfigError(f"config file {path}: {msg}") from None
    paths = data.get("path", [])
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise EmulatorConfigError(f"config file {path}: \"path\" must be a list of directories")
    return functions, [os.path.join(base, p) for p in paths]


def loopback_host(host):
    """The address to bind for host, which must be a loopback address (or "localhost")."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host.strip("[]") if isinstance(host, str) else host)
    except ValueError:
        raise EmulatorConfigError(f"host {host!r} is not an IP address; the emulator only listens "
                                  "on loopback (127.0.0.1, ::1)") from None
    if not addr.is_loopback:
        raise EmulatorConfigError(f"host {host} is not a loopback address; the emulator only "
                                  "listens on loopback (127.0.0.1, ::1)")
    return str(addr)
