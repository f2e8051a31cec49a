"""The platform routes every service gets from create_service."""

import httpx

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
