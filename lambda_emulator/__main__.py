"""python -m lambda_emulator: see lambda_emulator/__init__.py and --help."""

import sys

if __name__ == "__main__":
    # main() from the importable package, so that workers and this process share its classes (the
    # workers re-import this file as __mp_main__, which does nothing).
    from lambda_emulator.cli import main
    sys.exit(main())
