"""The Flask demo app the tests run under the real `ddtrace` (`ddtrace-run`).

The three routes of the classic demo (`/`, `/api/apm`, `/api/trace`, same bodies), plus
`/api/error`, which raises so the tracer reports an error span (HTTP 500).
Listens on 127.0.0.1:$PORT (default 5050).
"""
import os

from flask import Flask

app = Flask(__name__)


@app.route("/")
def entrypoint():
    return "Entrypoint to the Application"


@app.route("/api/apm")
def apm():
    return "Getting APM Started"


@app.route("/api/trace")
def trace():
    return "Posting Traces"


@app.route("/api/error")
def error():
    raise RuntimeError("intentional demo error from /api/error")


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5050")))
