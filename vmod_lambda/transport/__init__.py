"""The transports of the Lambda Invoke API behind one interface (base.py): "direct" (direct.py, the
default) and "boto3" (boto3.py). invoker.Invoker picks one per object."""
