"""Where emails go: SMTP when SMTP_HOST is set (Mailpit under compose), else the log."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from notification_service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    to: str
    subject: str
    body: str


class Sender(Protocol):
    channel: str

    async def send(self, message: Message) -> None: ...


class LogSender:
    """Writes each message to the log instead of sending it."""

    channel = "log"

    def __init__(self, show_addresses: bool = True) -> None:
        # Outside development the log carries no email address (personal data).
        self.show_addresses = show_addresses

    async def send(self, message: Message) -> None:
        to = message.to if self.show_addresses else _masked(message.to)
        log.info("email to %s: %s", to, message.subject)


class SmtpSender:
    channel = "email"

    def __init__(self, host: str, port: int, sender: str) -> None:
        self.host, self.port, self.sender = host, port, sender

    async def send(self, message: Message) -> None:
        email = EmailMessage()
        email["From"], email["To"], email["Subject"] = self.sender, message.to, message.subject
        email.set_content(message.body)
        await aiosmtplib.send(email, hostname=self.host, port=self.port, timeout=10)


def sender_for(settings: Settings) -> Sender:
    if settings.SMTP_HOST:
        return SmtpSender(settings.SMTP_HOST, settings.SMTP_PORT, settings.SMTP_FROM)
    return LogSender(show_addresses=settings.ENVIRONMENT == "development")


def _masked(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"
