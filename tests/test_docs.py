"""The documentation keeps up with the code."""

from pathlib import Path

from grantd.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented_with_its_variable() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in Settings.model_fields if f"`GRANTD_{name.upper()}`" not in text]
    assert missing == []


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```sh", 1)[1].split("```", 1)[0]
    assert first_block.strip().splitlines()[0].startswith("make run")
    assert first_block.strip().splitlines()[1].startswith("make test")

