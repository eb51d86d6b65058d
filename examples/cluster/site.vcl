# What differs between sites (identical on every node of one cluster): the nodes, who may act as a
# peer, and the Lambda function. Included by cluster.vcl; every node's varnishd runs with `-i` set to
# its own backend's name here (node1, node2, node3).

# Every node probes every node (itself included, which is harmless): a node that is down is taken
# off the ring after 2 failed probes of the last 3, and back on after 2 good ones.
probe cluster_node {
	.url = "/.cluster/health";
	.interval = 1s;
	.timeout = 500ms;
	.window = 3;
	.threshold = 2;
	.initial = 2;
}

backend node1 { .host = "10.0.0.1"; .port = "80"; .probe = cluster_node; }
backend node2 { .host = "10.0.0.2"; .port = "80"; .probe = cluster_node; }
backend node3 { .host = "10.0.0.3"; .port = "80"; .probe = cluster_node; }

# The addresses the nodes reach each other from: only they may send X-Cluster-Hop (a request that
# a peer already routed) and read /.cluster/health.
acl cluster_peers {
	"10.0.0.1";
	"10.0.0.2";
	"10.0.0.3";
}

sub vcl_init {
	# Consistent hashing of URLs onto the nodes. The same backends, in any order, give the same
	# ring on every node: each URL has one owner cluster-wide.
	new cluster = directors.shard();
	cluster.add_backend(node1);
	cluster.add_backend(node2);
	cluster.add_backend(node3);
	if (!cluster.reconfigure()) {
		return (fail("cluster: shard director reconfigure failed"));
	}

	# The function behind the cluster (credentials from boto3's chain on every node).
	new app = lambda.backend("my-app", "us-east-1", timeout = 10s);
}
