# A Varnish cluster in front of one Lambda function that invokes it once per URL.
#
# Every node runs this same file (with its own copy of site.vcl, identical on all nodes) and is both
#   - an edge: it takes client requests, caches, and on a miss asks the URL's owner node, and
#   - an owner: for the URLs that consistent hashing gives it, it is the only node that invokes Lambda.
#
# vmod_directors' shard director (consistent hashing, in Varnish itself) maps every URL to one owner
# among the healthy nodes. A miss on an edge becomes one request to the owner; concurrent misses on one
# node coalesce onto that one request (Varnish's waiting list), and the owner coalesces the requests of
# all the edges onto one Lambda invocation. N nodes therefore invoke the function once per URL and TTL,
# where N independent caches would invoke it up to N times (docs/CLUSTER.md has the figures).
#
# Start every node with its identity set to the name of its own backend in site.vcl:
#   varnishd -i node1 -f /etc/varnish/cluster.vcl ...      (node2, node3 on the others)
# That is how a node recognises itself among the shard's backends (server.identity, below).
#
# No loops: a request that a peer sends to its owner carries X-Cluster-Hop; the owner accepts that
# header only from the addresses in the acl cluster_peers and then always serves the request itself
# (from cache, or by invoking Lambda), whatever its own view of the ring says. A request is therefore
# forwarded at most once, even while the nodes disagree about who is healthy.
#
# Health: every node probes every other node (probe cluster_node in site.vcl, /.cluster/health below).
# When an owner stops answering, the shard director hands its URLs to the next node on the ring; a
# fetch that fails before the probe has noticed is retried once on that next node.

vcl 4.1;

import directors;
import lambda;
import std;

# The nodes (backends named like their identities, with probe cluster_node), acl cluster_peers, and
# vcl_init creating the shard director `cluster` and the Lambda object `app`.
include "./site.vcl";

sub vcl_recv {
	# The peers' health probes: a node that can run this VCL is up.
	if (req.url == "/.cluster/health") {
		if (client.ip ~ cluster_peers) {
			return (synth(200, "OK"));
		}
		return (synth(404));
	}
	# Only a peer may say that it already routed a request; a client's header is dropped.
	if (req.http.X-Cluster-Hop && !(client.ip ~ cluster_peers)) {
		unset req.http.X-Cluster-Hop;
	}
	# Then Varnish's built-in vcl_recv: methods, pass for Authorization and Cookie, hash.
}

sub vcl_backend_fetch {
	if ((bereq.http.X-Cluster-Hop && bereq.http.X-Cluster-Hop != server.identity)
	    || bereq.uncacheable) {
		# A peer made us the owner of this URL (never forward it again), or a pass (nothing
		# to share, so no reason for a round trip to another node): invoke here.
		set bereq.backend = app.backend();
		return (fetch);
	}
	# Consistent hashing on the URL over the healthy nodes; on a retry (vcl_backend_error) the
	# next healthy node on the ring.
	unset bereq.http.X-Cluster-Hop;
	set bereq.backend = cluster.backend(by = URL, alt = bereq.retries);
	if ("" + bereq.backend == server.identity || "" + bereq.backend == "") {
		# We own the URL (or no node is healthy, ourselves included: try anyway).
		set bereq.backend = app.backend();
	} else {
		# The owner is a peer: one request there, marked so that it does not come back.
		set bereq.http.X-Cluster-Hop = server.identity;
	}
}

sub vcl_backend_response {
	if (bereq.backend == app.backend()) {
		# Which node invoked Lambda for this object (kept in every node's copy): for logs.
		set beresp.http.X-Cluster-Owner = server.identity;
	}
}

sub vcl_backend_error {
	# A peer that failed (stopped, before its probe turned sick): once more on the next node.
	# Never retry a failed invocation here: that would invoke the function again.
	if (bereq.http.X-Cluster-Hop == server.identity && bereq.retries == 0) {
		return (retry);
	}
}
