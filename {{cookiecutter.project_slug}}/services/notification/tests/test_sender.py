"""The SMTP sender against a real SMTP server on a free port (aiosmtpd-free: a tiny one)."""

import asyncio
import email

from notification_service.sender import LogSender, Message, SmtpSender, sender_for
from notification_service.settings import Settings


async def test_smtp_sender_delivers_a_message() -> None:
    received: list[bytes] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 test ESMTP\r\n")
        data_mode, body = False, b""
        while line := await reader.readline():
            if data_mode:
                if line == b".\r\n":
                    received.append(body)
                    data_mode = False
                    writer.write(b"250 queued\r\n")
                else:
                    body += line
            elif line.upper().startswith(b"EHLO"):
                writer.write(b"250 test\r\n")
            elif line.upper().startswith(b"DATA"):
                data_mode = True
                writer.write(b"354 go\r\n")
            elif line.upper().startswith(b"QUIT"):
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        sender = SmtpSender("127.0.0.1", port, "from@example.com")
        await sender.send(Message(to="ada@example.com", subject="Hello", body="Hi Ada"))
    [raw] = received
    parsed = email.message_from_bytes(raw)
    assert (parsed["To"], parsed["Subject"]) == ("ada@example.com", "Hello")
    assert "Hi Ada" in parsed.get_payload()


def test_smtp_only_when_a_host_is_set() -> None:
    assert isinstance(sender_for(Settings()), LogSender)
    smtp = sender_for(Settings(SMTP_HOST="mailpit", SMTP_PORT=1025))
    assert isinstance(smtp, SmtpSender) and smtp.channel == "email"
