#
# examples/error-statuses.vcl: the statuses clients expect when a Lambda fetch fails, from
# lambda.error() (vmod_lambda.vcc, "Failure statuses from VCL"). Include it after
# `import lambda; import std;` in a VCL whose backends are lambda.backend() objects:
#
#     include "/etc/varnish/error-statuses.vcl";
#
# Each mapped cause ends vcl_backend_error here, with a short text body (the built-in
# vcl_backend_error would set its own Retry-After: 5); any other failure goes on to your
# vcl_backend_error, if any, and the built-in 503. Tested by vtc/lambda_b00040.vtc.
#

sub vcl_backend_error {
	if (lambda.error() == "throttled") {
		# Lambda's TooManyRequestsException: tell the client when to come back.
		set beresp.status = 429;
		set beresp.reason = "Too Many Requests";
		if (lambda.retry_after() > 0s) {
			set beresp.http.Retry-After = std.integer(duration = lambda.retry_after(),
			    fallback = 1);
		}
		call lambda_error_page;
	} elsif (lambda.error() == "timeout") {
		set beresp.status = 504;
		set beresp.reason = "Gateway Timeout";
		call lambda_error_page;
	} elsif (lambda.error() == "function_error") {
		set beresp.status = 502;
		set beresp.reason = "Bad Gateway";
		call lambda_error_page;
	} elsif (lambda.error() == "too_large") {
		set beresp.status = 413;
		set beresp.reason = "Content Too Large";
		call lambda_error_page;
	}
}

sub lambda_error_page {
	set beresp.http.Content-Type = "text/plain; charset=utf-8";
	set beresp.body = "" + beresp.status + " " + beresp.reason + {"
"};
	return (deliver);
}
