"""docs/settings.md lists every setting the code reads (`make catalog` writes it)."""

from dev_tools.settings_table import SETTINGS_DOC, table
from eventkit.settings import local_broker_url, shipped_broker


def test_the_settings_doc_lists_every_setting() -> None:
    written = SETTINGS_DOC.read_text()
    assert written == table(), "docs/settings.md is stale: make catalog"
    assert "| `MAX_RETRIES` |" in written and "| `SMTP_HOST` |" in written


def test_the_broker_url_row_gives_this_projects_broker_alone() -> None:
    rows = SETTINGS_DOC.read_text().splitlines()
    (line,) = [x for x in rows if x.startswith("| `BROKER_URL` |")]
    assert f"`{local_broker_url(shipped_broker())}`" in line, line
    assert f"`{local_broker_url('memory')}`" not in line, line
