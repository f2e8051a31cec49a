"""The sign-ups' plain HTTP/1.1 client (dev_tools/bench/http1.py), against a small server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dev_tools.bench.http1 import HttpError, Pool, parse_head


def test_an_answers_head_gives_status_length_and_keep_alive() -> None:
    head = b"HTTP/1.1 201 Created\r\ncontent-length: 12\r\ncontent-type: application/json\r\n\r\n"
    assert parse_head(head) == (201, 12, True)
    assert parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n") == (200, 0, False)
    assert parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n") == (200, 1, False)
    with pytest.raises(HttpError):
        parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(HttpError):
        parse_head(b"SSH-2.0-OpenSSH\r\n\r\n")


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[bytes], list[int]]]:
    """A server that answers each request 201 with its body, closing every third
    connection after its first answer; (its address, the requests, connections opened)."""
    requests: list[bytes] = []
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        closes = len(connections) % 3 == 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                requests.append(head + body)
                writer.write(
                    b"HTTP/1.1 201 Created\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
                )
                if closes:
                    writer.close()
                    return
        except asyncio.IncompleteReadError:
            writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield f"http://127.0.0.1:{port}", requests, connections


async def test_requests_reuse_connections_and_survive_a_closed_one(
    server: tuple[str, list[bytes], list[int]],
) -> None:
    address, requests, connections = server
    async with Pool(address, size=2, timeout=5) as pool:
        prepared = [pool.request("POST", "/users", b'{"n":%d}' % n) for n in range(20)]
        answers = await asyncio.gather(*(pool.send(request) for request in prepared))
    assert answers == [(201, b'{"n":%d}' % n) for n in range(20)]
    assert sorted(requests) == sorted(prepared)
    assert prepared[0].startswith(b"POST /users HTTP/1.1\r\nHost: 127.0.0.1:")
    assert len(connections) < 20  # kept alive, and reopened where the server closed


async def test_a_server_that_is_not_there_is_an_http_error() -> None:
    async with Pool("http://127.0.0.1:1", size=1, timeout=5) as pool:
        with pytest.raises(HttpError):
            await pool.send(pool.request("POST", "/users", b"{}"))
    with pytest.raises(ValueError):
        Pool("https://example.invalid", size=1, timeout=1)
