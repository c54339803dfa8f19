"""The README's walkthrough, run as pasted, against a real `grantd serve`."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def walkthrough_script() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- walkthrough:start -->\s*```sh\n(.*?)```\s*<!-- walkthrough:end -->", readme, re.S)
    assert block, "README.md has no walkthrough block"
    return block.group(1)


@pytest.mark.db
def test_readme_walkthrough_runs_against_a_real_server(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(f"sqlite+aiosqlite:///{tmp_path / 'walkthrough.db'}")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", walkthrough_script()],
        cwd=ROOT,
        env={**os.environ, "BASE": server.base_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert '{"data":{"message":"Permissions granted successfully."},"status_code":200}' in result.stdout
    verified = re.search(r"^verified: (\S+) may \['read_profile', 'write_data'\] for app (\S+)$", result.stdout, re.M)
    assert verified, result.stdout
