"""A Starlette app on Lambda through Mangum, written as for AWS (nothing vmod-lambda specific).

Mangum picks its adapter from the event's shape: API Gateway REST (1.0), HTTP API (2.0) or ALB.
Form parsing needs python-multipart.
"""

from mangum import Mangum
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# A tiny PNG signature plus the start of an IHDR chunk: binary, with NUL and 0xff bytes.
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\xff\xfe\x00"


async def items(request: Request):
    return JSONResponse({"tag": request.query_params.getlist("tag")})


async def cookies(request: Request):
    response = JSONResponse({"cookies": 2})
    response.set_cookie("session", "abc123", path="/", httponly=True)
    response.set_cookie("theme", "dark", path="/")
    return response


async def image(request: Request):
    return Response(PNG, media_type="image/png")


async def echo(request: Request):
    return JSONResponse(await request.json())


async def form(request: Request):
    data = await request.form()
    return JSONResponse({key: data.getlist(key) for key in data.keys()})


async def status(request: Request):
    return Response(b"I'm a teapot", status_code=int(request.path_params["code"]),
                    media_type="text/plain")


app = Starlette(routes=[
    Route("/items", items),
    Route("/cookies", cookies),
    Route("/image.png", image),
    Route("/echo", echo, methods=["POST"]),
    Route("/form", form, methods=["POST"]),
    Route("/status/{code:int}", status),
])

handler = Mangum(app, lifespan="off")
