"""The notification service's app: its read model's routes, its subscribers and its mailer."""

from fastapi import FastAPI

from contracts import ROSTER
from eventkit import create_service
from eventkit.transports import Transport
from notification_service.api import router
from notification_service.dispatch import EmailDispatcher
from notification_service.handlers import build_subscriptions
from notification_service.sender import Sender, sender_for
from notification_service.settings import Settings


def create_app(
    settings: Settings | None = None,
    transport: Transport | None = None,
    sender: Sender | None = None,
) -> FastAPI:
    settings = settings or Settings()
    dispatcher = EmailDispatcher(sender or sender_for(settings))
    # A rebuild replays through the same handlers: each email's delivery state outlives it.
    return create_service(
        settings,
        ROSTER,
        [router],
        build_subscriptions(dispatcher.channel()),
        transport=transport,
        workers=[dispatcher],
    )
