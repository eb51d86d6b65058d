"""The same routes with AWS Lambda Powertools' event handler, one resolver per AWS front end,
written as for AWS (nothing vmod-lambda specific):

    rest_handler  API Gateway REST API (payload format 1.0)
    http_handler  API Gateway HTTP API (payload format 2.0)
    alb_handler   Application Load Balancer
    url_handler   Lambda function URL (payload format 2.0)

Repeated query keys use OpenAPI validation (Annotated[list[str], Query()]), which needs pydantic.
"""

from typing import Annotated
from urllib.parse import parse_qs

from aws_lambda_powertools.event_handler import (
    ALBResolver,
    APIGatewayHttpResolver,
    APIGatewayRestResolver,
    LambdaFunctionUrlResolver,
    Response,
    content_types,
)
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import Router
from aws_lambda_powertools.shared.cookies import Cookie

# A tiny PNG signature plus the start of an IHDR chunk: binary, with NUL and 0xff bytes.
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\xff\xfe\x00"

router = Router()


@router.get("/items")
def items(tag: Annotated[list[str], Query()] = []):  # noqa: B006 (Powertools' documented form)
    return {"tag": tag}


@router.get("/cookies")
def cookies():
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON,
                    body={"cookies": 2},
                    cookies=[Cookie(name="session", value="abc123", path="/", http_only=True),
                             Cookie(name="theme", value="dark", path="/")])


@router.get("/image.png")
def image():
    return Response(status_code=200, content_type="image/png", body=PNG)


@router.post("/echo")
def echo():
    return router.current_event.json_body


@router.post("/form")
def form():
    return parse_qs(router.current_event.decoded_body or "", keep_blank_values=True)


@router.get("/status/<code>")
def status(code: int):
    return Response(status_code=code, content_type=content_types.TEXT_PLAIN, body="I'm a teapot")


def _app(resolver):
    resolver.include_router(router)
    return resolver


rest_app = _app(APIGatewayRestResolver(enable_validation=True))
http_app = _app(APIGatewayHttpResolver(enable_validation=True))
alb_app = _app(ALBResolver(enable_validation=True, decode_query_parameters=True))
url_app = _app(LambdaFunctionUrlResolver(enable_validation=True))


def rest_handler(event, context):
    return rest_app.resolve(event, context)


def http_handler(event, context):
    return http_app.resolve(event, context)


def alb_handler(event, context):
    return alb_app.resolve(event, context)


def url_handler(event, context):
    return url_app.resolve(event, context)
