"""Exports a known set of spans with the real OpenTelemetry Python SDK and OTLP exporter.

usage: export_spans.py grpc|http ENDPOINT SERVICE REQUESTS

For i in 0..REQUESTS: one SERVER span, `GET /items/{id}` when i is even, else `POST /orders`,
with one CLIENT child span (PostgreSQL, `SELECT * FROM items WHERE id = <i>`). Every 4th
`POST /orders` (i % 8 == 1) ends with an ERROR status and a recorded exception. Prints one
JSON line with what was sent and exits non-zero when any export failed.
"""

import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode


class Recording:
    """Wraps an exporter and remembers every export result."""

    def __init__(self, inner):
        self.inner = inner
        self.results = []

    def export(self, spans):
        result = self.inner.export(spans)
        self.results.append((len(spans), result))
        return result

    def shutdown(self):
        return self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)


def main():
    protocol, endpoint, service, requests = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=20)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=20)
    recording = Recording(exporter)
    resource = Resource.create(
        {"service.name": service, "deployment.environment.name": "otel-test", "service.version": "2.0"}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(recording, max_export_batch_size=64))
    tracer = provider.get_tracer("apm.otel.test", "0.1")
    sent = {"spans": 0, "errors": 0}
    for i in range(requests):
        get = i % 2 == 0
        fails = i % 8 == 1
        attrs = {"http.request.method": "GET" if get else "POST", "http.route": "/items/{id}" if get else "/orders"}
        with tracer.start_as_current_span("request", kind=SpanKind.SERVER, attributes=attrs) as span:
            with tracer.start_as_current_span(
                "query",
                kind=SpanKind.CLIENT,
                attributes={"db.system": "postgresql", "db.statement": f"SELECT * FROM items WHERE id = {i}"},
            ):
                pass
            span.set_attribute("http.response.status_code", 500 if fails else 200)
            if fails:
                span.record_exception(ValueError(f"order {i} rejected"))
                span.set_status(Status(StatusCode.ERROR, "order rejected"))
                sent["errors"] += 1
        sent["spans"] += 2
    flushed = provider.force_flush(30000)
    provider.shutdown()
    failed = [n for n, r in recording.results if r != SpanExportResult.SUCCESS]
    exported = sum(n for n, r in recording.results if r == SpanExportResult.SUCCESS)
    print(json.dumps({"sent": sent, "exported": exported, "failed_batches": len(failed), "flushed": flushed}))
    sys.exit(0 if flushed and not failed and exported == sent["spans"] else 1)


if __name__ == "__main__":
    main()
