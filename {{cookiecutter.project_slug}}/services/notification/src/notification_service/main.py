"""The notification service's app: its read model's routes and its subscribers."""

from pathlib import Path

from fastapi import FastAPI

from contracts import ROSTER
from eventkit import create_service
from eventkit.transports import Transport
from notification_service.api import router
from notification_service.dispatch import Delivery, EmailDispatcher
from notification_service.handlers import build_subscriptions
from notification_service.models import Notification, Recipient
from notification_service.sender import Sender, sender_for
from notification_service.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(
    settings: Settings | None = None,
    transport: Transport | None = None,
    sender: Sender | None = None,
) -> FastAPI:
    settings = settings or Settings()
    dispatcher = EmailDispatcher(sender or sender_for(settings))
    return create_service(
        settings,
        ROSTER,
        title="notification service",
        routers=[router],
        subscriptions=build_subscriptions(dispatcher.delivery()),
        # A rebuild replays history into the read model without sending anything again.
        replay_subscriptions=build_subscriptions(Delivery(dispatcher.sender.channel, replay=True)),
        read_models=[Notification, Recipient],
        transport=transport,
        migrations=MIGRATIONS,
        workers=[dispatcher],
    )
