#!/usr/bin/python3
"""A Mailpit stand-in: accepts mail on :1025 and lists it on :8025, kept in MP_DATABASE."""

import email
import email.policy
import json
import os
import signal
import sqlite3
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

DATABASE = os.environ.get("MP_DATABASE", "/tmp/mailpit.db")
LOCK = threading.Lock()


def connect() -> sqlite3.Connection:
    os.makedirs(os.path.dirname(DATABASE) or ".", exist_ok=True)
    db = sqlite3.connect(DATABASE, check_same_thread=False)
    db.execute(
        "CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, created REAL, sender TEXT,"
        " recipients TEXT, subject TEXT, size INTEGER)"
    )
    return db


class Sink:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with LOCK, self.db:
            self.db.execute(
                "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)",
                (
                    uuid.uuid4().hex,
                    time.time(),
                    envelope.mail_from,
                    json.dumps(envelope.rcpt_tos),
                    str(message.get("Subject", "")),
                    len(envelope.content),
                ),
            )
        return "250 Message accepted for delivery"


def api(db: sqlite3.Connection) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/readyz":
                return self.reply(200, b"ok", "text/plain")
            if self.path.split("?")[0] == "/api/v1/messages":
                with LOCK:
                    rows = db.execute(
                        "SELECT id, created, sender, recipients, subject, size FROM messages"
                        " ORDER BY created DESC"
                    ).fetchall()
                messages = [
                    {
                        "ID": row[0],
                        "Created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row[1])),
                        "From": {"Name": "", "Address": row[2]},
                        "To": [{"Name": "", "Address": a} for a in json.loads(row[3])],
                        "Subject": row[4],
                        "Size": row[5],
                    }
                    for row in rows
                ]
                body = {"total": len(messages), "count": len(messages), "messages": messages}
                return self.reply(200, json.dumps(body).encode(), "application/json")
            return self.reply(404, b"not found", "text/plain")

        def do_DELETE(self) -> None:
            if self.path == "/api/v1/messages":
                with LOCK, db:
                    db.execute("DELETE FROM messages")
                return self.reply(200, b"ok", "text/plain")
            return self.reply(404, b"not found", "text/plain")

        def reply(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def main() -> int:
    if sys.argv[1:2] == ["readyz"]:
        try:
            urllib.request.urlopen("http://127.0.0.1:8025/readyz", timeout=3)
        except OSError:
            return 1
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1: stop at once
    db = connect()
    smtp = Controller(Sink(db), hostname="0.0.0.0", port=1025)
    smtp.start()
    print("mailpit stand-in: SMTP on 1025, API on 8025", flush=True)
    ThreadingHTTPServer(("0.0.0.0", 8025), api(db)).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
