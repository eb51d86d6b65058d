#!/bin/sh
# Run varnishtest files against the staged fresh build (make stage):
#   STAGE=/var/tmp/vmod-lambda-test scripts/run-vtc.sh [varnishtest options] file.vtc ...
#   INSTALLED=1 scripts/run-vtc.sh file.vtc ...     (against `make install`: no overrides at all;
#                                                    INSTALLED_PREFIX= the home it must report, default
#                                                    /usr/local/lib/vmod-lambda; the .deb's is /usr/lib/vmod-lambda)
#
# The varnishd child (user vcache) loads libvmod_lambda.so from $STAGE/vmods and the Python side from
# $STAGE (VMOD_LAMBDA_HOME). Credentials are fake and fixed, and every AWS lookup that could leave the
# machine (instance metadata, shared files of the user) is switched off: tests talk to loopback only.
set -eu
: "${STAGE:=/var/tmp/vmod-lambda-test}"
vmoddir=$(pkg-config --variable=vmoddir varnishapi)

export AWS_ACCESS_KEY_ID=AKIDVMODLAMBDATEST
export AWS_SECRET_ACCESS_KEY=vmod-lambda-test-secret
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE AWS_ENDPOINT_URL AWS_ENDPOINT_URL_LAMBDA
export AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null
export AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset VMOD_LAMBDA_LOADER VMOD_LAMBDA_NO_DEEPBIND

if [ -n "${INSTALLED:-}" ]; then
	unset VMOD_LAMBDA_HOME
	exec varnishtest -t 120 -D "installed_prefix=${INSTALLED_PREFIX:-/usr/local/lib/vmod-lambda}" "$@"
fi
export VMOD_LAMBDA_HOME="$STAGE"
exec varnishtest -t 120 -p "vmod_path=$STAGE/vmods:$vmoddir" -D "stage=$STAGE" "$@"
