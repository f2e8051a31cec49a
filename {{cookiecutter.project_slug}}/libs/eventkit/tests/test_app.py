"""The platform routes every service gets from create_service."""

import httpx
import pytest
from fastapi import APIRouter
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from eventkit import ServiceSettings, create_service
from eventkit.transports.memory import MemoryTransport
from sample_domain import things_roster


class Settings(ServiceSettings):
    SERVICE_NAME: str = "source"
    PORT: int = 9997


async def test_the_asyncapi_document_has_its_page_beside_it(database_url: str) -> None:
    app = create_service(
        Settings(DATABASE_URL=database_url), things_roster(), transport=MemoryTransport()
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    async with client:
        document = await client.get("/asyncapi")
        page = await client.get("/asyncapi.html")
    assert document.status_code == 200
    assert document.json()["info"]["title"] == "source service"
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>source service AsyncAPI</title>" in page.text
    assert "AsyncApiStandalone.render" in page.text  # FastStream's page, rendering the document
    assert '\\"title\\": \\"source service\\"' in page.text


async def test_a_database_that_does_not_answer_is_a_503_that_says_so(database_url: str) -> None:
    router = APIRouter()

    @router.get("/things")
    async def things() -> list[str]:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    app = create_service(
        Settings(DATABASE_URL=database_url), things_roster(), [router], transport=MemoryTransport()
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    async with client:
        answer = await client.get("/things")
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("the database does not answer")
    assert answer.headers["retry-after"] == "5"


CLOSED = 'database "x" is not currently accepting connections'


class NotAccepting(Exception):
    """asyncpg's ObjectNotInPrerequisiteStateError, as a database closed to connections
    raises it (SQLAlchemy wraps it in a bare DBAPIError)."""

    sqlstate = "55000"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        # Found by the simulation (seed 400137): a read route during a database outage.
        (DBAPIError("SELECT 1", {}, NotAccepting(CLOSED)), 503),
        (IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")), 500),
        (OperationalError("SELECT", {}, Exception("no such table: things")), 500),
    ],
    ids=["closed to connections", "a constraint", "a missing table"],
)
async def test_only_a_database_that_did_not_answer_is_a_503(
    database_url: str, error: Exception, status: int
) -> None:
    """One classification (eventkit.db.database_unavailable) for the routes and the
    consumer: what says the database did not answer is a 503, a bug stays a 500."""
    router = APIRouter()

    @router.get("/things")
    async def things() -> list[str]:
        raise error

    app = create_service(
        Settings(DATABASE_URL=database_url), things_roster(), [router], transport=MemoryTransport()
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/things")
    assert answer.status_code == status
    assert ("retry-after" in answer.headers) is (status == 503)
