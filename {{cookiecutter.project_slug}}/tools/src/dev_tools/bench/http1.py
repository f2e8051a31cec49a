"""The sign-ups' HTTP client: keep-alive HTTP/1.1 on plain asyncio streams, nothing more.

A general client (httpx) spends a few milliseconds of CPU on one request with everything
around it (about 2.6 ms a sign-up on 2 cores, the lag read from the inboxes); on a machine the
benchmark shares with the stack, that is CPU taken from what it measures (this client:
about 0.5 ms). Here each request is its bytes, built before the step (request line,
headers, body); an answer is read as far as its status and its Content-Length body. A
connection goes back to the pool after its answer and is reused while younger than
KEEPALIVE (the services' uvicorn closes idle ones after 5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlsplit

KEEPALIVE = 2.0  # seconds an idle connection is reused for


class HttpError(Exception):
    """A request that got no complete answer."""


class Pool:
    """Up to `size` keep-alive connections to one host; `post` sends prepared requests."""

    def __init__(self, base_url: str, size: int, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{base_url}: a plain http:// address is needed")
        self.host, self.port = parts.hostname, parts.port or 80
        self.base_path = parts.path.rstrip("/")
        self.timeout = timeout
        self.slots = asyncio.Semaphore(size)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.writers: set[asyncio.StreamWriter] = set()

    def request(self, method: str, path: str, body: bytes) -> bytes:
        """The bytes of one request with a JSON body, to send later as they are."""
        head = (
            f"{method} {self.base_path}{path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one prepared request; its status and body. Raises HttpError or TimeoutError."""
        async with self.slots:
            # A reused connection the server closed meanwhile fails before any answer:
            # once more on a new one (nothing was processed).
            for attempt in range(2):
                connection, reused = await self._connection()
                try:
                    status, body, keep = await asyncio.wait_for(
                        self._exchange(*connection, request), self.timeout
                    )
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    self._close(connection[1])
                    if reused and attempt == 0 and _nothing_read(exc):
                        continue
                    raise HttpError(f"{type(exc).__name__}: {exc}") from exc
                except BaseException:
                    self._close(connection[1])
                    raise
                if keep:
                    self.idle.append((*connection, time.monotonic()))
                else:
                    self._close(connection[1])
                return status, body
        raise AssertionError("unreachable")

    async def _connection(
        self,
    ) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter], bool]:
        now = time.monotonic()
        while self.idle:
            reader, writer, since = self.idle.pop()
            if now - since < KEEPALIVE and not writer.is_closing():
                return (reader, writer), True
            self._close(writer)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
        except OSError as exc:
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        self.writers.add(writer)
        return (reader, writer), False

    @staticmethod
    async def _exchange(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[int, bytes, bool]:
        writer.write(request)
        status, length, keep = parse_head(await reader.readuntil(b"\r\n\r\n"))
        body = await reader.readexactly(length) if length else b""
        return status, body, keep

    def _close(self, writer: asyncio.StreamWriter) -> None:
        self.writers.discard(writer)
        writer.close()

    async def aclose(self) -> None:
        for writer in list(self.writers):
            self._close(writer)
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        self.idle.clear()

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, Content-Length, whether the connection stays open) of an answer's head."""
    lines = head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        raise HttpError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
    length, keep = 0, status_line[0] == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            keep = value == b"keep-alive" or (keep and value != b"close")
        elif name == b"transfer-encoding" and value != b"identity":
            raise HttpError(f"transfer-encoding {value.decode(errors='replace')}: not read here")
    return int(status_line[1]), length, keep


def _nothing_read(exc: BaseException) -> bool:
    """Whether a failure came before any byte of the answer (the server had closed)."""
    if isinstance(exc, asyncio.IncompleteReadError):
        return not exc.partial
    return isinstance(exc, ConnectionError)
