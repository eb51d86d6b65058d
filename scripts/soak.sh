#!/bin/sh
# Soak run against the staged fresh build (make stage): 20 minutes of mixed traffic by default, the
# child's RSS sampled every 10 s and required to stay within 10% after a 10-minute warm-up.
#   STAGE=/var/tmp/vmod-lambda-test sh scripts/soak.sh [--duration 1200] [--warmup 600] ...
# Not part of `make test`: `make soak` runs it.
set -eu
: "${STAGE:=/var/tmp/vmod-lambda-test}"
here=$(cd "$(dirname "$0")/.." && pwd)
VMOD_LAMBDA_STAGE="$STAGE" exec "${VENV:-$here/.venv}/bin/python" "$here/scripts/soak.py" "$@"
