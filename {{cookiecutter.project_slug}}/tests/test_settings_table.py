"""The README's settings table lists every setting the code reads (`make catalog` writes it)."""

from scripts.settings_table import README, written


def test_the_readme_lists_every_setting() -> None:
    readme = README.read_text()
    assert written(readme) == readme, "README's settings table is stale: make catalog"
    assert "| `MAX_RETRIES` |" in readme and "| `SMTP_HOST` |" in readme
