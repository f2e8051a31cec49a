import asyncio
import email
from collections.abc import AsyncIterator
from email.message import Message as ParsedEmail

import pytest


class SmtpStub:
    """A tiny SMTP server on a free port: accepts every recipient but those in `replies`,
    which get the reply given there (e.g. "550 5.1.1 no such mailbox")."""

    def __init__(self) -> None:
        self.received: list[ParsedEmail] = []
        self.replies: dict[str, str] = {}
        self.recipients: list[str] = []  # every RCPT, accepted or not
        self.port = 0

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 stub ESMTP\r\n")
        data_mode, body = False, b""
        while line := await reader.readline():
            command = line.upper()
            if data_mode:
                if line == b".\r\n":
                    self.received.append(email.message_from_bytes(body))
                    data_mode, body = False, b""
                    writer.write(b"250 queued\r\n")
                else:
                    body += line
            elif command.startswith(b"EHLO"):
                writer.write(b"250 stub\r\n")
            elif command.startswith(b"RCPT"):
                address = line.decode().partition(":")[2].strip().strip("<>")
                self.recipients.append(address)
                writer.write(self.replies.get(address, "250 ok").encode() + b"\r\n")
            elif command.startswith(b"DATA"):
                data_mode = True
                writer.write(b"354 go\r\n")
            elif command.startswith(b"QUIT"):
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    def to(self, address: str) -> list[ParsedEmail]:
        return [m for m in self.received if m["To"] == address]


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpStub]:
    stub = SmtpStub()
    server = await asyncio.start_server(stub.session, "127.0.0.1", 0)
    stub.port = server.sockets[0].getsockname()[1]
    async with server:
        yield stub
