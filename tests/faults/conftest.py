"""The fault-injection suite's own services: a PostgreSQL cluster (initdb in a temporary folder,
its own port) and a ``redis-server``, each started for the suite, so that stopping, freezing
(SIGSTOP) and restarting them never touches the shared ones. ``make test-faults`` runs the suite
(``-m faults``); ``make test`` does not collect it (tests/conftest.py).

PostgreSQL refuses to run as root: as root, its files belong to the ``postgres`` user and it runs
as that user (``runuser``). Where a service cannot be started here, the tests that need it are
skipped, saying why.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.servers import free_port


def _postgres_bin() -> Path:
    """Where the PostgreSQL server's programs are: ``pg_config --bindir`` when it has ``initdb``
    (Debian's pg_config comes with libpq, whose version may not be the server's), else the
    newest /usr/lib/postgresql/<version>/bin that has it, else PostgreSQL 15's (then skipped)."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        done = subprocess.run([pg_config, "--bindir"], check=False, capture_output=True, text=True)
        bindir = Path(done.stdout.strip())
        if done.returncode == 0 and (bindir / "initdb").exists():
            return bindir
    installed = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    numbered = [path for path in installed if path.parent.name.isdigit()]
    if numbered:
        return max(numbered, key=lambda path: int(path.parent.name))
    return Path("/usr/lib/postgresql/15/bin")


PG_BIN = _postgres_bin()


class Service:
    """A server process the tests may stop, start, freeze and thaw."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, f"{self.name} is running"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        """A fast shutdown (SIGINT for PostgreSQL, SIGTERM for Redis): connections are closed."""
        self.thaw()
        if self.process is not None and self.process.poll() is None:
            # To the whole process group: as root, the process started is runuser, the server its child.
            os.killpg(self.process.pid, self._stop_signal)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            deadline = time.monotonic() + 30
            while self._ready() and time.monotonic() < deadline:
                time.sleep(0.1)

    _stop_signal = signal.SIGTERM

    def _pids(self) -> list[int]:
        """The server's processes: the one started and all its descendants (PostgreSQL's backends
        each lead a process group of their own, so signalling the group would miss them)."""
        assert self.process is not None
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += children.get(pid, [])
        return found

    def freeze(self) -> None:
        """SIGSTOP to every process of the server: it keeps its sockets but answers nothing."""
        self._frozen_pids = self._pids()
        for pid in self._frozen_pids:
            os.kill(pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            for pid in self._frozen_pids:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            self.frozen = False


class PrivatePostgres(Service):
    def __init__(self, folder: Path) -> None:
        super().__init__("postgres", folder / "postgres.log")
        self.folder = folder
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    _stop_signal = signal.SIGINT

    def _as_postgres(self, command: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    def init(self) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            os.chown(self.log_path, owner.pw_uid, owner.pw_gid)
        self._initdb()

    def _initdb(self) -> None:
        done = subprocess.run(
            self._as_postgres([str(PG_BIN / "initdb"), "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres", "--no-sync"]),
            check=False, capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")

    def _command(self) -> list[str]:
        return self._as_postgres([
            str(PG_BIN / "postgres"), "-D", str(self.folder / "data"), "-p", str(self.port), "-k", str(self.folder),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=100",
        ])

    def _ready(self) -> bool:
        done = subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"], check=False)
        return done.returncode == 0


class PrivateRedis(Service):
    def __init__(self, folder: Path) -> None:
        super().__init__("redis", folder / "redis.log")
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        return ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.folder)]

    def _ready(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False


def _postgres_reason() -> str | None:
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL server binaries (initdb) at {PG_BIN}, nor by pg_config (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run PostgreSQL as"
    return None


@pytest.fixture(scope="session")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    reason = _postgres_reason()
    if reason:
        pytest.skip(reason)
    # Not under pytest's temporary folder: that is the current user's alone, and PostgreSQL runs as
    # the postgres user.
    folder = Path(tempfile.mkdtemp(prefix="grantd-faults-postgres-"))
    folder.chmod(0o755)
    (folder / "postgres.log").touch()
    service = PrivatePostgres(folder)
    try:
        service.init()
        service.start()
        yield service
    finally:
        service.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    service = PrivateRedis(tmp_path_factory.mktemp("private-redis"))
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def postgres_service(private_postgres: PrivatePostgres) -> Iterator[PrivatePostgres]:
    """The private PostgreSQL, answering again after the test whatever the test did to it."""
    yield private_postgres
    private_postgres.thaw()
    if private_postgres.process is None or private_postgres.process.poll() is not None:
        private_postgres.start()


@pytest.fixture
def redis_service(private_redis: PrivateRedis) -> Iterator[PrivateRedis]:
    yield private_redis
    private_redis.thaw()
    if private_redis.process is None or private_redis.process.poll() is not None:
        private_redis.start()
