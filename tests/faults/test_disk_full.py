"""SQLite on a disk that fills up under load: /readyz says not ready (``writable: disk_full``),
writes answer 503 temporarily_unavailable with Retry-After instead of 500, reads go on, and once
space is freed everything works again by itself; every token acknowledged with 200 is in the
database exactly once. The small disk is a tmpfs mounted for the test (skipped where mounting is
not allowed).

Under load the write-ahead log alone can grow by megabytes a second, so the filler file is opened,
with a ballast written into it, before the server starts: whatever fills the disk last, removing
the filler frees at least the ballast."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from faults.load import Load, assert_acknowledged_exactly_once, assert_unavailable_shape, prepare, run
from support.servers import ServerProcess, start_server

pytestmark = pytest.mark.faults


BALLAST = 32 * 1024 * 1024


@pytest.fixture
def small_disk() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="grantd-faults-disk-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(folder)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here to fill ({mounted.stderr.strip() or mounted.returncode}); needs root or CAP_SYS_ADMIN")
    try:
        (folder / "filler").write_bytes(b"\0" * BALLAST)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
        folder.rmdir()


@pytest.fixture
def server(small_disk: Path, secret_key: str, tmp_path: Path) -> Iterator[ServerProcess]:
    # Only the database is on the small disk: the log (and the mail folder) stay where they can be written.
    process = start_server(f"sqlite+aiosqlite:///{small_disk / 'grantd.db'}", secret_key, tmp_path, env={"GRANTD_LOG_FORMAT": "json"})
    process.database_url = f"sqlite+aiosqlite:///{small_disk / 'grantd.db'}"  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        process.stop()


def _fill(folder: Path) -> Path:
    """Appends zeros to the filler (which already holds the ballast) until the file system has no
    space left: unbuffered, so that nothing is left to flush, and fail, when the file is closed."""
    filler = folder / "filler"
    with open(filler, "ab", buffering=0) as out:
        for size in (65536, 4096, 1):  # the last bytes in ever smaller pieces
            chunk = b"\0" * size
            try:
                while out.write(chunk):
                    pass
            except OSError:
                pass
    return filler


async def _readiness(base_url: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.get("/readyz")
    return response.status_code, response.json()


async def _wait_for(check, seconds: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"not within {seconds} s")


async def test_a_full_disk_is_not_ready_and_answers_503(server: ServerProcess, small_disk: Path, secret_key: str) -> None:
    target = await prepare(server.base_url)
    load = Load()
    stop = asyncio.Event()
    runner = asyncio.create_task(run(target, stop, load))
    try:
        await asyncio.sleep(1)
        filled = time.monotonic()
        filler = await asyncio.to_thread(_fill, small_disk)

        async def not_ready() -> bool:
            status, body = await _readiness(server.base_url)
            return status == 503 and body["checks"]["writable"] == "disk_full"

        await _wait_for(not_ready, 10)

        async def writes_refused() -> bool:
            return any(a.status == 503 and a.kind in ("client_credentials", "redeem", "authorize") for a in load.between(filled, time.monotonic()))

        await _wait_for(writes_refused, 30)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            jwks = await client.get("/.well-known/jwks.json")  # reads go on
        assert jwks.status_code == 200

        filler.unlink()
        freed = time.monotonic()

        async def ready() -> bool:
            return (await _readiness(server.base_url))[0] == 200

        await _wait_for(ready, 15)

        async def writes_work() -> bool:
            since = load.between(freed, time.monotonic())
            return {"client_credentials", "redeem"} <= {a.kind for a in since if a.status == 200}

        await _wait_for(writes_work, 15)
    finally:
        stop.set()
        await runner

    full = load.between(filled, freed)
    assert full, "no request was sent while the disk was full"
    for answer in load.answers:
        assert answer.status in (200, 401, 503), answer
    for answer in full:
        if answer.status == 503:
            assert_unavailable_shape(answer)
    log = server.log()
    assert "Traceback" not in log and "unhandled error" not in log, log[-4000:]
    assert "the database is unavailable (disk_full)" in log, log[-4000:]
    refused = sum(1 for a in full if a.status == 503)
    assert log.count("the database is unavailable") < refused or refused <= 2, "one log line per refused request"

    await assert_acknowledged_exactly_once(server.database_url, secret_key, load)  # type: ignore[attr-defined]
