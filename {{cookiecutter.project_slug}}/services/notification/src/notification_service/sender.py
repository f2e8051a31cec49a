"""Where messages go: a log sink locally (SMTP to Mailpit is configured under compose)."""

import logging
from dataclasses import dataclass
from typing import Protocol

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

    async def send(self, message: Message) -> None:
        log.info("email to %s: %s", message.to, message.subject)
