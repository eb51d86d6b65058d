"""lambda.backend() argument validation (vmod_lambda.config), the messages vcl.load shows."""

import pytest

from vmod_lambda.config import ConfigError, validate_backend


def test_defaults():
    cfg = validate_backend("fn", "my-fn", "us-east-1")
    assert (cfg.timeout, cfg.pool_size, cfg.response_format, cfg.endpoint_url) == \
        (62.0, 64, "json", None)
    assert cfg.connect_timeout == 10.0


def test_subsecond_timeout_keeps_its_precision():
    cfg = validate_backend("fn", "my-fn", "us-east-1", timeout=0.5)
    assert cfg.timeout == 0.5
    assert cfg.connect_timeout == 0.5


@pytest.mark.parametrize("name", [
    "my-fn", "my_fn.v2", "my-fn:live", "my-fn:$LATEST", "my-fn:7",
    "123456789012:function:my-fn",
    "arn:aws:lambda:us-east-1:123456789012:function:my-fn",
    "arn:aws:lambda:us-east-1:123456789012:function:my-fn:live",
    "arn:aws-us-gov:lambda:us-gov-west-1:123456789012:function:my-fn",
])
def test_function_name_forms_accepted(name):
    assert validate_backend("fn", name, "us-east-1").function_name == name


@pytest.mark.parametrize("kwargs, message", [
    (dict(function_name=""), "lambda.backend(): fn: function_name must not be empty"),
    (dict(function_name=None), "lambda.backend(): fn: function_name must not be empty"),
    (dict(function_name="my fn"), "function_name 'my fn' is not a Lambda function name"),
    (dict(function_name="a/b"), "function_name 'a/b' is not a Lambda function name"),
    (dict(function_name="x" * 171), "is not a Lambda function name"),
    (dict(region=""), "lambda.backend(): fn: region must not be empty"),
    (dict(region="US East"), "region 'US East' is not an AWS region name"),
    (dict(endpoint_url="ftp://h"), "endpoint_url 'ftp://h' is not an http:// or https:// URL"),
    (dict(endpoint_url="localhost:9001"), "is not an http:// or https:// URL"),
    (dict(endpoint_url="http://"), "is not an http:// or https:// URL"),
    (dict(endpoint_url="http://h:99999"), "is not an http:// or https:// URL"),
    (dict(endpoint_url="http://h x"), "is not an http:// or https:// URL"),
    (dict(endpoint_url="http://h/?q=1"), "is not an http:// or https:// URL"),
    (dict(timeout=0.0), "timeout must be greater than 0s (got 0s)"),
    (dict(timeout=-2.0), "timeout must be greater than 0s (got -2s)"),
    (dict(timeout=901.0), "timeout must be at most 900s"),
    (dict(response_format="xml"), "response_format must be \"json\" or \"http\" (got 'xml')"),
    (dict(response_format=""), "response_format must be \"json\" or \"http\""),
    (dict(pool_size=0), "pool_size must be from 1 to 1024 (got 0)"),
    (dict(pool_size=1025), "pool_size must be from 1 to 1024 (got 1025)"),
])
def test_invalid_arguments_name_object_and_argument(kwargs, message):
    args = dict(name="fn", function_name="my-fn", region="us-east-1")
    args.update(kwargs)
    with pytest.raises(ConfigError) as e:
        validate_backend(**args)
    assert message in str(e.value)
    assert str(e.value).startswith("lambda.backend(): fn: ")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9001", "https://lambda.us-east-1.amazonaws.com",
                                 "http://[::1]:9001/", "http://localhost/prefix"])
def test_endpoint_urls_accepted(url):
    assert validate_backend("fn", "f", "us-east-1", endpoint_url=url).endpoint_url == url
