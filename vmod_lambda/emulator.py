"""Deprecated: the emulator is the lambda_emulator package now (`python -m lambda_emulator`,
`from lambda_emulator import Emulator, streamify_response, ...`). This name keeps working for one
release: importing it warns (DeprecationWarning), running it (`python -m vmod_lambda.emulator`)
says so on stderr, and both then use lambda_emulator.

Nothing here is loaded by varnishd. scripts/install-home.sh leaves this file out of the home, and
lambda_emulator is never installed there; where lambda_emulator is missing, importing this module
raises ImportError saying so, and running it exits with status 1 and that message.
"""

import sys
import warnings

DEPRECATION = ("vmod_lambda.emulator is deprecated and will be removed in the next release: use "
               "`python -m lambda_emulator` (or the vmod-lambda-emulator script) and "
               "`import lambda_emulator`")

try:
    import lambda_emulator as _new
except ImportError as e:
    _missing = ImportError(f"vmod_lambda.emulator: the emulator moved to the lambda_emulator "
                           f"package, which is not importable here ({e}); install it with "
                           f"`pip install ./lambda_emulator` from the vmod-lambda source")
    if __name__ != "__main__":
        raise _missing from None
    _new = None

if _new is not None:
    from lambda_emulator import *  # noqa: E402,F401,F403  (the old public names)
    from lambda_emulator import __all__  # noqa: E402,F401

if __name__ == "__main__":
    print(f"warning: {DEPRECATION}", file=sys.stderr, flush=True)
    if _new is None:
        print(_missing, file=sys.stderr)
        sys.exit(1)
    from lambda_emulator.cli import main
    sys.exit(main())
elif __name__ != "__mp_main__":
    warnings.warn(DEPRECATION, DeprecationWarning, stacklevel=2)
