"""The SMTP sender against a real SMTP server on a free port (a tiny one: conftest.py)."""

import socket
from typing import Any

import pytest

from notification_service.sender import LogSender, Message, Refused, SmtpSender, sender_for
from notification_service.settings import Settings


async def test_smtp_sender_delivers_a_message(smtp: Any) -> None:
    sender = SmtpSender("127.0.0.1", smtp.port, "from@example.com")
    await sender.send(Message(to="ada@example.com", subject="Hello", body="Hi Ada"))
    [parsed] = smtp.received
    assert (parsed["To"], parsed["Subject"]) == ("ada@example.com", "Hello")
    assert "Hi Ada" in parsed.get_payload()


def test_smtp_only_when_a_host_is_set() -> None:
    assert isinstance(sender_for(Settings()), LogSender)
    smtp = sender_for(Settings(SMTP_HOST="mailpit", SMTP_PORT=1025))
    assert isinstance(smtp, SmtpSender) and smtp.channel == "email"


async def test_a_5xx_for_the_recipient_is_a_refusal_and_a_4xx_or_no_server_is_not(
    smtp: Any,
) -> None:
    smtp.replies["gone@example.com"] = "550 5.1.1 no such mailbox"
    smtp.replies["later@example.com"] = "451 4.3.0 try again later"
    sender = SmtpSender("127.0.0.1", smtp.port, "from@example.com")
    with pytest.raises(Refused, match=r"550 5\.1\.1 no such mailbox"):
        await sender.send(Message(to="gone@example.com", subject="Hi", body="Hi"))
    with pytest.raises(Exception) as later:
        await sender.send(Message(to="later@example.com", subject="Hi", body="Hi"))
    assert not isinstance(later.value, Refused)
    with pytest.raises(Refused, match="cannot be written"):  # a header it cannot write
        await sender.send(Message(to="a@example.com\r\nBcc: b@example.com", subject="Hi", body=""))
    await sender.send(Message(to="fine@example.com", subject="Hi", body="Hi"))
    assert [m["To"] for m in smtp.received] == ["fine@example.com"]
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        nobody = SmtpSender("127.0.0.1", unused.getsockname()[1], "from@example.com")
        with pytest.raises(ConnectionError):  # no server: not a refusal, the email waits
            await nobody.send(Message(to="fine@example.com", subject="Hi", body="Hi"))
