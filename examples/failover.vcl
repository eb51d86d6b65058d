# Failover between two copies of one Lambda function: two regions (as here) or two aliases of one
# function ("my-app:blue" and "my-app:green" in one region). docs/FAILOVER.md explains it;
# tests/varnish/test_failover.py runs this file (with local endpoints and a short probe interval).
#
# - vmod_directors' fallback director sends every fetch to the first healthy backend: the primary
#   while it is healthy, the secondary otherwise, and back to the primary when it recovers (not
#   sticky).
# - A backend is sick when its probe says so (the function fails, times out, or is unreachable),
#   and, at once, while it holds off after a 429 (throttle_hold): a throttled region leaves the
#   rotation on its first 429, without waiting for the probes.
# - A fetch that fails before the probes noticed (function error, timeout, 5xx, the 429 itself)
#   is tried once more on the other region, for GET and HEAD only (never invoke twice for a
#   POST).
# - Grace keeps serving what is cached when both regions fail.

vcl 4.1;

import directors;
import lambda;
import std;

# Every poke is an invocation you pay for: a cheap route, not too often.
probe lambda_health {
    .url = "/healthz";
    .interval = 5s;
    .timeout = 2s;
    .window = 3;
    .threshold = 2;
    .initial = 2;
}

backend default none;

sub vcl_init {
    new primary = lambda.backend("my-app", "us-east-1", probe = lambda_health,
                                 timeout = 10s, event_format = "2.0", throttle_hold = 5s);
    new secondary = lambda.backend("my-app", "us-west-2", probe = lambda_health,
                                   timeout = 10s, event_format = "2.0", throttle_hold = 5s);

    new app = directors.fallback();
    app.add_backend(primary.backend());
    app.add_backend(secondary.backend());
}

sub vcl_recv {
    set req.backend_hint = app.backend();
    # Objects stay usable for an hour past their TTL (beresp.grace below): while a region is
    # healthy, clients get at most 10 s old content, and one of them refreshes it in the
    # background; when both are down, grace serves what is cached, up to an hour old.
    if (std.healthy(req.backend_hint)) {
        set req.grace = 10s;
    }
}

sub vcl_backend_fetch {
    if (bereq.retries > 0) {
        # The retry of a failed fetch: the other region, whatever the probes say yet (a sick or
        # held one fails at once, without invoking).
        if (bereq.http.X-Failed-Backend == "primary") {
            set bereq.backend = secondary.backend();
        } else {
            set bereq.backend = primary.backend();
        }
        unset bereq.http.X-Failed-Backend;
    }
}

sub vcl_backend_response {
    set beresp.grace = 1h;
    set beresp.http.X-Lambda-Backend = beresp.backend.name;
}

sub vcl_backend_error {
    if (bereq.retries == 0 && (bereq.method == "GET" || bereq.method == "HEAD")) {
        set bereq.http.X-Failed-Backend = beresp.backend.name;
        return (retry);
    }
}
