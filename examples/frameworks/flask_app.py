"""A Flask app on Lambda through apig-wsgi, written as for AWS (nothing vmod-lambda specific).

apig-wsgi reads API Gateway REST (1.0), HTTP API (2.0) and ALB events (with or without multi-value
headers); binary_support=True returns non-text bodies base64-encoded.
"""

from apig_wsgi import make_lambda_handler
from flask import Flask, Response, jsonify, request

# A tiny PNG signature plus the start of an IHDR chunk: binary, with NUL and 0xff bytes.
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\xff\xfe\x00"

app = Flask(__name__)


@app.get("/items")
def items():
    return jsonify(tag=request.args.getlist("tag"))


@app.get("/cookies")
def cookies():
    response = jsonify(cookies=2)
    response.set_cookie("session", "abc123", path="/", httponly=True)
    response.set_cookie("theme", "dark", path="/")
    return response


@app.get("/image.png")
def image():
    return Response(PNG, mimetype="image/png")


@app.post("/echo")
def echo():
    return jsonify(request.get_json())


@app.post("/form")
def form():
    return jsonify(request.form.to_dict(flat=False))


@app.get("/status/<int:code>")
def status(code):
    return Response("I'm a teapot", status=code, mimetype="text/plain")


handler = make_lambda_handler(app, binary_support=True)
