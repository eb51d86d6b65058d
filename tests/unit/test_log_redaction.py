"""The function's log tail never carries a client's credentials to varnishlog (vmod_lambda.vcc, LOGGING):
a corpus of the shapes in which Lambda runtimes print an event (Python, Node, Java, Go; one line or
pretty-printed over several; 1.0 and 2.0 events), each holding the same secrets, goes through
stats.tail_lines as X-Amz-Log-Result does. No secret survives, and the rest of the line does."""

import base64

import pytest

from vmod_lambda import stats

SECRETS = ("Bearer-TOKEN-0001", "session=SID-0002", "theme=dark-0003", "APIKEY-0004",
           "FwoGZXIvYXdzTOKEN-0005")
TS, RID = "2026-12-07T13:00:00.000Z", "0c1b1d2e-1111-2222-3333-444455556666"

CORPUS = {
    # Python: print(event) of a 1.0 event (dict repr), in the runtime's plain stdout line
    "python print 1.0": (
        "{'resource': '/cart', 'path': '/cart', 'httpMethod': 'GET', 'headers': {'Authorization': "
        "'Bearer Bearer-TOKEN-0001', 'Cookie': 'session=SID-0002; theme=dark-0003', 'x-api-key': "
        "'APIKEY-0004'}, 'multiValueHeaders': {'Authorization': ['Bearer Bearer-TOKEN-0001'], "
        "'Cookie': ['session=SID-0002; theme=dark-0003'], 'X-Amz-Security-Token': "
        "['FwoGZXIvYXdzTOKEN-0005']}, 'queryStringParameters': None}"),
    # Python: logging with the runtime's prefix, json.dumps(event) on one line
    "python logging json": (
        f"[INFO]\t{TS}\t{RID}\tevent: {{\"path\": \"/cart\", \"headers\": {{\"authorization\": "
        "\"Bearer Bearer-TOKEN-0001\", \"cookie\": \"session=SID-0002; theme=dark-0003\"}, "
        "\"multiValueHeaders\": {\"x-api-key\": [\"APIKEY-0004\"], \"x-amz-security-token\": "
        "[\"FwoGZXIvYXdzTOKEN-0005\"]}}"),
    # Python: json.dumps(event, indent=2): values on lines of their own
    "python json indent": (
        "{\n  \"path\": \"/cart\",\n  \"headers\": {\n    \"Authorization\": \"Bearer Bearer-TOKEN-0001\",\n"
        "    \"x-api-key\": \"APIKEY-0004\"\n  },\n  \"multiValueHeaders\": {\n    \"Cookie\": [\n"
        "      \"session=SID-0002\",\n      \"theme=dark-0003\"\n    ],\n"
        "    \"X-Amz-Security-Token\": [\n      \"FwoGZXIvYXdzTOKEN-0005\"\n    ]\n  }\n}"),
    # Powertools' structured logger: one JSON object per line, the event inside
    "python powertools": (
        "{\"level\":\"INFO\",\"location\":\"handler:12\",\"message\":\"/cart\",\"event\":{\"version\":"
        "\"2.0\",\"cookies\":[\"session=SID-0002\",\"theme=dark-0003\"],\"headers\":{\"authorization\":"
        "\"Bearer Bearer-TOKEN-0001\",\"x-api-key\":\"APIKEY-0004\",\"x-amz-security-token\":"
        "\"FwoGZXIvYXdzTOKEN-0005\"}}}"),
    # Node: console.log(JSON.stringify(event)) of a 2.0 event, with the runtime's prefix
    "node stringify 2.0": (
        f"{TS}\t{RID}\tINFO\t{{\"version\":\"2.0\",\"rawPath\":\"/cart\",\"cookies\":[\"session=SID-0002\","
        "\"theme=dark-0003\"],\"headers\":{\"authorization\":\"Bearer Bearer-TOKEN-0001\","
        "\"x-api-key\":\"APIKEY-0004\",\"x-amz-security-token\":\"FwoGZXIvYXdzTOKEN-0005\"}}"),
    # Node: console.log(event): util.inspect, unquoted keys, single quotes, over several lines
    "node inspect": (
        f"{TS}\t{RID}\tINFO\t{{\n  version: '2.0',\n  rawPath: '/cart',\n  cookies: [ 'session=SID-0002', "
        "'theme=dark-0003' ],\n  headers: {\n    authorization: 'Bearer Bearer-TOKEN-0001',\n"
        "    'x-api-key': 'APIKEY-0004',\n    'x-amz-security-token': 'FwoGZXIvYXdzTOKEN-0005'\n  }\n}"),
    # Node: a long array that util.inspect breaks over lines
    "node inspect long array": (
        f"{TS}\t{RID}\tINFO\t{{\n  rawPath: '/cart',\n  cookies: [\n    'session=SID-0002',\n"
        "    'theme=dark-0003'\n  ],\n  headers: { authorization: 'Bearer Bearer-TOKEN-0001', "
        "'x-api-key': 'APIKEY-0004', 'x-amz-security-token': 'FwoGZXIvYXdzTOKEN-0005' }\n}"),
    # Node: JSON.stringify(event, null, 2)
    "node stringify pretty": (
        "{\n  \"rawPath\": \"/cart\",\n  \"cookies\": [\n    \"session=SID-0002\",\n    \"theme=dark-0003\"\n"
        "  ],\n  \"headers\": {\n    \"authorization\": \"Bearer Bearer-TOKEN-0001\",\n    \"x-api-key\": "
        "\"APIKEY-0004\",\n    \"x-amz-security-token\": \"FwoGZXIvYXdzTOKEN-0005\"\n  }\n}"),
    # Java: APIGatewayProxyRequestEvent.toString() (key: value, Map.toString with key=value)
    "java toString": (
        f"{TS} {RID} INFO  Handler - {{resource: /cart,path: /cart,httpMethod: GET,headers: "
        "{Authorization=Bearer Bearer-TOKEN-0001, Cookie=session=SID-0002; theme=dark-0003, "
        "x-api-key=APIKEY-0004},multiValueHeaders: {Authorization=[Bearer Bearer-TOKEN-0001], "
        "X-Amz-Security-Token=[FwoGZXIvYXdzTOKEN-0005]},}"),
    # Java: Gson toJson on one line
    "java gson": (
        "EVENT: {\"path\":\"/cart\",\"headers\":{\"Authorization\":\"Bearer Bearer-TOKEN-0001\","
        "\"Cookie\":\"session=SID-0002; theme=dark-0003\"},\"multiValueHeaders\":{\"x-api-key\":"
        "[\"APIKEY-0004\"],\"X-Amz-Security-Token\":[\"FwoGZXIvYXdzTOKEN-0005\"]}}"),
    # Go: log.Printf("%+v", event) of events.APIGatewayProxyRequest (maps: key:value, spaces)
    "go %+v": (
        "2026/12/07 13:00:00 {Resource:/cart Path:/cart HTTPMethod:GET Headers:map[Authorization:Bearer "
        "Bearer-TOKEN-0001 Cookie:session=SID-0002; theme=dark-0003 X-Api-Key:APIKEY-0004] "
        "MultiValueHeaders:map[X-Amz-Security-Token:[FwoGZXIvYXdzTOKEN-0005]]}"),
    # Go: json.Marshal of a 2.0 event
    "go json 2.0": (
        "2026/12/07 13:00:00 {\"rawPath\":\"/cart\",\"cookies\":[\"session=SID-0002\",\"theme=dark-0003\"],"
        "\"headers\":{\"authorization\":\"Bearer Bearer-TOKEN-0001\",\"x-api-key\":\"APIKEY-0004\","
        "\"x-amz-security-token\":\"FwoGZXIvYXdzTOKEN-0005\"}}"),
    # A plain header dump
    "header dump": (
        "Authorization: Bearer Bearer-TOKEN-0001\nCookie: session=SID-0002; theme=dark-0003\n"
        "X-Api-Key: APIKEY-0004\nX-Amz-Security-Token: FwoGZXIvYXdzTOKEN-0005\nPath: /cart"),
}


def tail(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_no_secret_of_a_logged_event_reaches_varnishlog(name):
    lines = stats.tail_lines(tail(f"START RequestId: {RID} Version: $LATEST\n{CORPUS[name]}\n"
                                  f"END RequestId: {RID}\n"))
    text = "\n".join(lines)
    for secret in SECRETS:
        assert secret not in text, (name, secret, lines)
    assert "[redacted]" in text
    # what is not a credential stays readable
    assert "/cart" in text, lines
    assert lines[0].startswith("START RequestId:") and lines[-1].startswith("END RequestId:")


def test_a_quoted_value_keeps_its_quotes():
    assert stats.redact('{"authorization": "Basic c2VjcmV0", "path": "/x"}') == \
        '{"authorization": "[redacted]", "path": "/x"}'
    assert stats.redact("{'cookie': 'a=b'}") == "{'cookie': '[redacted]'}"


def test_a_list_value_is_redacted_whole():
    assert stats.redact('"authorization":["Bearer x"],"y":1') == '"authorization":[redacted],"y":1'


def test_a_value_cut_by_the_end_of_the_tail_is_redacted_to_the_end():
    # the tail is the last 4 KB: a value may be cut in the middle
    assert stats.redact('"cookies": [\n  "session=SID-0002",\n  "the') == '"cookies": [redacted]'


def test_words_that_only_contain_a_key_are_left_alone():
    line = "cookie-consent banner shown; no authorization needed for /public"
    assert stats.redact(line) == line
