"""The demo's Lambda function: a small web app written for API Gateway (payload 1.0) events.

Routes:
    GET  /              an HTML page, cacheable for 10 s
    GET  /api/time      JSON, never cached (Cache-Control: no-store)
    POST /api/echo      echoes the request body back as JSON
    GET  /image.png     a binary PNG (base64 in the Lambda response, bytes through Varnish)
    GET  /cookies       sets two cookies
    GET  /healthz       for the probe
    POST /admin/break   makes every route but /admin/* fail with an exception
    POST /admin/fix     back to normal
The broken flag lives in a file, since Lambda (and the emulator) may run the function in several
processes.
"""

import base64
import json
import os
import tempfile
import time

BROKEN = os.path.join(tempfile.gettempdir(), "vmod-lambda-demo-broken")
# A 1x1 transparent PNG.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def response(status, body, content_type="text/plain; charset=utf-8", headers=None, binary=False):
    h = {"Content-Type": content_type}
    h.update(headers or {})
    return {"statusCode": status, "headers": h,
            "body": base64.b64encode(body).decode() if binary else body,
            "isBase64Encoded": binary}


def handler(event, context):
    method = event.get("httpMethod", "GET")
    path = event.get("path", "/")
    if path == "/admin/break" and method == "POST":
        open(BROKEN, "w").close()
        return response(200, "the function now fails; cached pages keep being served\n")
    if path == "/admin/fix" and method == "POST":
        if os.path.exists(BROKEN):
            os.unlink(BROKEN)
        return response(200, "the function works again\n")
    if os.path.exists(BROKEN):
        raise RuntimeError("the demo app is broken (POST /admin/fix to repair it)")

    if path == "/" and method == "GET":
        html = ("<!doctype html><title>vmod-lambda demo</title>"
                "<h1>Hello from Lambda, through Varnish</h1>"
                f"<p>Rendered at {time.strftime('%H:%M:%S')} by request {context.aws_request_id}.</p>")
        return response(200, html, "text/html; charset=utf-8", {"Cache-Control": "max-age=10"})
    if path == "/api/time":
        return response(200, json.dumps({"time": time.time()}), "application/json",
                        {"Cache-Control": "no-store"})
    if path == "/api/echo" and method == "POST":
        body = event.get("body") or ""
        if event.get("isBase64Encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        return response(200, json.dumps({"you_sent": body}), "application/json")
    if path == "/image.png":
        return response(200, PNG, "image/png", {"Cache-Control": "max-age=3600"}, binary=True)
    if path == "/cookies":
        return {"statusCode": 200, "headers": {"Content-Type": "text/plain"},
                "multiValueHeaders": {"Set-Cookie": ["flavour=oatmeal; Path=/",
                                                     "size=large; Path=/"]},
                "body": "two cookies set\n"}
    if path == "/healthz":
        return response(200, "ok\n", headers={"Cache-Control": "no-store"})
    return response(404, f"no route for {method} {path}\n")
