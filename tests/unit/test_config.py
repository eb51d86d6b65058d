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


@pytest.mark.parametrize("name, base, qualifier", [
    ("my-fn", "my-fn", None),
    ("my-fn:live", "my-fn", "live"),
    ("my-fn:$LATEST", "my-fn", "$LATEST"),
    ("123456789012:function:my-fn:7", "123456789012:function:my-fn", "7"),
    ("arn:aws:lambda:us-east-1:123456789012:function:my-fn:live",
     "arn:aws:lambda:us-east-1:123456789012:function:my-fn", "live"),
])
def test_qualifier_is_split_from_function_name(name, base, qualifier):
    cfg = validate_backend("fn", name, "us-east-1")
    assert (cfg.base_name, cfg.qualifier) == (base, qualifier)


def test_qualifier_argument_agrees_or_fails():
    assert validate_backend("fn", "my-fn", "us-east-1", qualifier="blue").qualifier == "blue"
    assert validate_backend("fn", "my-fn:blue", "us-east-1", qualifier="blue").qualifier == "blue"
    with pytest.raises(ConfigError, match=r"^lambda.backend\(\): fn: qualifier 'green' disagrees "
                                          r"with the qualifier 'blue' in function_name"):
        validate_backend("fn", "my-fn:blue", "us-east-1", qualifier="green")
    for bad in ("", "a b", "x" * 129, "$latest"):
        with pytest.raises(ConfigError, match="is not a version, .LATEST or an alias name"):
            validate_backend("fn", "my-fn", "us-east-1", qualifier=bad)


def test_client_context_is_base64_json_object_within_lambdas_limit():
    import base64
    cfg = validate_backend("fn", "f", "us-east-1", client_context='{"custom": {"k": "v"}}')
    assert base64.b64decode(cfg.client_context) == b'{"custom": {"k": "v"}}'
    for bad, msg in (("[1]", "must be a JSON object"), ("{x", "is not JSON"),
                     ('{"k": "%s"}' % ("v" * 2700), "more than Lambda's 3583")):
        with pytest.raises(ConfigError, match=msg):
            validate_backend("fn", "f", "us-east-1", client_context=bad)
    # 3583 encoded bytes is the most Lambda takes: 2685 bytes of JSON encode to 3580
    ok = '{"k": "%s"}' % ("v" * (2685 - 10))
    assert len(validate_backend("fn", "f", "us-east-1", client_context=ok).client_context) <= 3583


def test_transport_and_streaming():
    # The default is the fastest correct transport (BENCHMARKS.md); boto3 stays selectable.
    assert validate_backend("fn", "f", "us-east-1").transport == "direct"
    assert validate_backend("fn", "f", "us-east-1", transport="boto3").transport == "boto3"
    with pytest.raises(ConfigError, match="transport must be one of 'boto3', 'direct'"):
        validate_backend("fn", "f", "us-east-1", transport="crt2")
    assert validate_backend("fn", "f", "us-east-1").streaming is False
    assert validate_backend("fn", "f", "us-east-1", streaming=True).streaming is True


@pytest.mark.parametrize("fmt", ["1.0-compat", "1.0", "2.0"])
def test_multi_value_is_refused_outside_alb(fmt):
    with pytest.raises(ConfigError, match=r"^lambda\.backend\(\): fn: multi_value applies to "
                                          rf"event_format = \"alb\" only \(got '{fmt}'"):
        validate_backend("fn", "my-fn", "us-east-1", event_format=fmt, multi_value=True)
    assert validate_backend("fn", "my-fn", "us-east-1", event_format=fmt).multi_value is False
    assert validate_backend("fn", "my-fn", "us-east-1", event_format="alb",
                            multi_value=True).multi_value is True
