"""The README's settings table lists every setting the code reads (`make catalog` writes it)."""

from dev_tools.settings_table import README, written
from eventkit.settings import local_broker_url, shipped_broker


def test_the_readme_lists_every_setting() -> None:
    readme = README.read_text()
    assert written(readme) == readme, "README's settings table is stale: make catalog"
    assert "| `MAX_RETRIES` |" in readme and "| `SMTP_HOST` |" in readme


def test_the_broker_url_row_gives_this_projects_broker_alone() -> None:
    (line,) = [x for x in README.read_text().splitlines() if x.startswith("| `BROKER_URL` |")]
    assert f"`{local_broker_url(shipped_broker())}`" in line, line
    assert f"`{local_broker_url('memory')}`" not in line, line
