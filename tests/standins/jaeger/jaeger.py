#!/usr/bin/python3
"""A Jaeger stand-in: OTLP/HTTP (protobuf) in on :4318, Jaeger's query API out on :16686."""

import gzip
import json
import signal
import struct
import sys
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
TRACES: dict[str, list[dict]] = defaultdict(list)  # trace id -> spans
LOCK = threading.Lock()


def fields(data: bytes):
    """(field number, value) of a protobuf message: ints for varints, bytes otherwise."""
    i = 0
    while i < len(data):
        key, i = varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(data, i)
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 2:
            size, i = varint(data, i)
            value, i = data[i : i + size], i + size
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield number, value


def varint(data: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, i


def any_value(data: bytes):
    for number, value in fields(data):
        if number == 1:
            return "string", value.decode()
        if number == 2:
            return "bool", bool(value)
        if number == 3:
            return "int64", value
        if number == 4:
            return "float64", struct.unpack("<d", value)[0]
    return "string", ""


def attributes(items: list[bytes]) -> list[dict]:
    tags = []
    for item in items:
        key, kind, value = "", "string", ""
        for number, part in fields(item):
            if number == 1:
                key = part.decode()
            elif number == 2:
                kind, value = any_value(part)
        tags.append({"key": key, "type": kind, "value": value})
    return tags


def ingest(body: bytes) -> None:
    for number, resource_spans in fields(body):
        if number != 1:
            continue
        service, scope_spans = "unknown", []
        for part_number, part in fields(resource_spans):
            if part_number == 1:
                resource = [v for n, v in fields(part) if n == 1]
                tags = {t["key"]: t["value"] for t in attributes(resource)}
                service = str(tags.get("service.name", service))
            elif part_number == 2:
                scope_spans.append(part)
        for scope in scope_spans:
            for span_number, raw in fields(scope):
                if span_number == 2:
                    span = decode_span(raw, service)
                    with LOCK:
                        TRACES[span["traceID"]].append(span)


def decode_span(raw: bytes, service: str) -> dict:
    span: dict = {"references": [], "logs": [], "flags": 1, "warnings": None}
    tags: list[bytes] = []
    start = end = 0
    for number, value in fields(raw):
        if number == 1:
            span["traceID"] = value.hex()
        elif number == 2:
            span["spanID"] = value.hex()
        elif number == 4 and value:
            span["parent"] = value.hex()
        elif number == 5:
            span["operationName"] = value.decode()
        elif number == 6:
            span["kind"] = KINDS.get(value, "unspecified")
        elif number == 7:
            start = struct.unpack("<Q", value)[0]
        elif number == 8:
            end = struct.unpack("<Q", value)[0]
        elif number == 9:
            tags.append(value)
    kind = span.pop("kind", "unspecified")
    span["tags"] = [*attributes(tags), {"key": "span.kind", "type": "string", "value": kind}]
    if parent := span.pop("parent", None):
        span["references"] = [{"refType": "CHILD_OF", "traceID": span["traceID"], "spanID": parent}]
    span["startTime"], span["duration"] = start // 1000, max(0, end - start) // 1000
    span["service"] = service
    return span


def as_trace(trace_id: str, spans: list[dict]) -> dict:
    services = sorted({s["service"] for s in spans})
    process_of = {name: f"p{i + 1}" for i, name in enumerate(services)}
    out = [
        {**{k: v for k, v in s.items() if k != "service"}, "processID": process_of[s["service"]]}
        for s in spans
    ]
    processes = {pid: {"serviceName": name, "tags": []} for name, pid in process_of.items()}
    return {"traceID": trace_id, "spans": out, "processes": processes, "warnings": None}


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces":
            return self.reply(404, b"")
        try:
            ingest(body)
        except (ValueError, IndexError, UnicodeDecodeError, struct.error) as exc:
            return self.reply(400, str(exc).encode())
        self.reply(200, b"", "application/x-protobuf")

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/status":
            return self.reply(200, b'{"status":"Server available"}')
        if url.path == "/api/services":
            with LOCK:
                names = sorted({s["service"] for spans in TRACES.values() for s in spans})
            return self.json({"data": names, "total": len(names)})
        if url.path.startswith("/api/traces/"):
            trace_id = url.path.rsplit("/", 1)[1]
            with LOCK:
                spans = list(TRACES.get(trace_id, []))
            if not spans:
                missing = {"data": None, "errors": [{"code": 404, "msg": "trace not found"}]}
                return self.json(missing, 404)
            return self.json({"data": [as_trace(trace_id, spans)]})
        if url.path == "/api/traces":
            query = parse_qs(url.query)
            service = query.get("service", [""])[0]
            limit = int(query.get("limit", ["20"])[0])
            with LOCK:
                found = [
                    as_trace(t, list(spans))
                    for t, spans in TRACES.items()
                    if any(s["service"] == service for s in spans)
                ]
            return self.json({"data": found[-limit:]})
        self.reply(404, b"not found")

    def json(self, body: dict, status: int = 200) -> None:
        self.reply(status, json.dumps(body).encode(), "application/json")

    def reply(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1: stop at once
    for port in (4318, 13133):
        server = ThreadingHTTPServer(("0.0.0.0", port), Receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("jaeger stand-in: OTLP/HTTP on 4318, query API on 16686, health on 13133", flush=True)
    ThreadingHTTPServer(("0.0.0.0", 16686), Receiver).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
