#
# vmod-lambda demo: Varnish in front of a Lambda function, no API Gateway in between.
# A template for production: replace endpoint_url (drop it to talk to AWS), the function name
# and the region; credentials come from the environment or the instance role.
#
vcl 4.1;

import lambda;
import std;

# Varnish wants a backend; every request goes to the Lambda director below.
backend default none;

# Health probe: each poke is a real invocation you pay for. Keep the interval long and the route
# cheap. While the function is sick, fetches fail at once and cached content is served from grace.
probe lambda_health {
	.url = "/healthz";
	.interval = 5s;
	.timeout = 2s;
	.window = 3;
	.threshold = 2;
	.initial = 2;
}

sub vcl_init {
	new app = lambda.backend(
	    function_name = "demo-app",
	    region = "us-east-1",
	    endpoint_url = "http://127.0.0.1:9001",   # the local emulator; omit for AWS
	    timeout = 5s,                             # hold a Varnish thread at most this long
	    event_format = "1.0",                     # API Gateway REST shape (2.0 and alb exist)
	    probe = lambda_health);
	# The same function for the /admin/ routes, without a probe: a health probe marks `app` sick
	# while the function fails, and a sick backend is not fetched from, so the repair request
	# (POST /admin/fix) must not depend on the health of what it repairs.
	new admin = lambda.backend(
	    function_name = "demo-app",
	    region = "us-east-1",
	    endpoint_url = "http://127.0.0.1:9001",
	    timeout = 5s,
	    event_format = "1.0");
}

sub vcl_recv {
	if (req.url ~ "^/admin/") {
		set req.backend_hint = admin.backend();
		return (pass);
	}
	set req.backend_hint = app.backend();
	# A POST invokes the function every time; everything else is cached by its Cache-Control.
	if (req.method != "GET" && req.method != "HEAD") {
		return (pass);
	}
	# Cookies would make every request a miss; this app does not read them on GET.
	unset req.http.Cookie;
}

sub vcl_backend_response {
	# Keep objects an hour past their TTL: when the function fails or is slow, Varnish serves the
	# stale copy (grace) instead of an error, and refreshes it in the background.
	set beresp.grace = 1h;
	# Responses that set cookies are per-user: never cache them.
	if (beresp.http.Set-Cookie) {
		set beresp.uncacheable = true;
		set beresp.ttl = 120s;
	}
}

sub vcl_deliver {
	# Show what the cache did: HIT (Age > 0 too) or MISS.
	if (obj.hits > 0) {
		set resp.http.X-Cache = "HIT";
	} else {
		set resp.http.X-Cache = "MISS";
	}
}
