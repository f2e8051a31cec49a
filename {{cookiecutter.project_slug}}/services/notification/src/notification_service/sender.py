"""Where emails go: SMTP when SMTP_HOST is set (Mailpit under compose), else the log.

A sender raises Refused when this email can never go (a 5xx refusal of its recipient or
its content): the dispatcher records it as failed and goes on. Any other error means "not
now" and the email waits: no connection, a timeout, a 4xx "try again later", and a refused
sender too, which is the configuration's fault (SMTP_FROM), the same for every email, and
cured by fixing it rather than by failing them all.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib
from aiosmtplib import (
    SMTPDataError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
)

from notification_service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    to: str
    subject: str
    body: str


class Refused(Exception):
    """The server refused this email for good: sending it again cannot succeed."""


class Sender(Protocol):
    channel: str

    async def send(self, message: Message) -> None:
        """Send `message`; Refused if it can never be sent, any other error if not now."""
        ...


class LogSender:
    """Writes each message to the log instead of sending it."""

    channel = "log"

    def __init__(self, show_addresses: bool = True) -> None:
        # Outside development the log carries no email address (personal data).
        self.show_addresses = show_addresses

    async def send(self, message: Message) -> None:
        to = message.to if self.show_addresses else _masked(message.to)
        log.info("email to %s: %s", to, message.subject)


# How a written email reaches the server: aiosmtplib.send's shape.
Deliver = Callable[..., Awaitable[object]]


class SmtpSender:
    channel = "email"

    def __init__(
        self, host: str, port: int, sender: str, deliver: Deliver = aiosmtplib.send
    ) -> None:
        # `deliver`: the pipeline simulation puts its SMTP server there, so the refusals
        # below are classified by this very code.
        self.host, self.port, self.sender, self.deliver = host, port, sender, deliver

    async def send(self, message: Message) -> None:
        try:
            email = EmailMessage()
            email["From"], email["To"], email["Subject"] = self.sender, message.to, message.subject
            email.set_content(message.body)
        except (ValueError, TypeError) as exc:  # e.g. a line break in an address
            raise Refused(f"the email cannot be written: {exc}") from exc
        try:
            await self.deliver(email, hostname=self.host, port=self.port, timeout=10)
        except SMTPRecipientsRefused as exc:
            if exc.recipients and all(_permanent(r) for r in exc.recipients):
                raise Refused("; ".join(_reply(r) for r in exc.recipients)) from exc
            raise
        except (SMTPRecipientRefused, SMTPDataError) as exc:
            if _permanent(exc):
                raise Refused(_reply(exc)) from exc
            raise


def sender_for(settings: Settings) -> Sender:
    if settings.SMTP_HOST:
        return SmtpSender(settings.SMTP_HOST, settings.SMTP_PORT, settings.SMTP_FROM)
    return LogSender(show_addresses=settings.ENVIRONMENT == "development")


def _masked(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def _permanent(reply: SMTPResponseException) -> bool:
    """A 5xx reply: the server will refuse it again (a 4xx asks to try later)."""
    return 500 <= reply.code < 600


def _reply(reply: SMTPResponseException) -> str:
    return f"{reply.code} {reply.message}"
