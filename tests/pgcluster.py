"""A real PostgreSQL primary with a synchronous streaming replica, for failover tests.

Usage (synchronous code; every method blocks until the server is in the new state)::

    from tests.pgcluster import PgCluster, require_pg_binaries

    with PgCluster(ports=(55432, 55433), host="127.0.0.1") as pg:
        url = pg.url("relay")          # postgresql://postgres@h:P1,h:P2/relay?target_session_attrs=read-write
        pg.create_database("relay")
        pg.stop_primary()              # pg_ctl stop -m immediate
        pg.promote()                   # the replica becomes the primary
        pg.rebuild_replica()           # pg_basebackup from the new primary; synchronous again
        pg.restart(pg.primary, "fast")  # pg_ctl restart -m fast|immediate|smart

Each server is ``initdb``-ed in a temporary directory and run with ``pg_ctl`` as the
user ``postgres`` when we are root (PostgreSQL refuses to run as root), as ourselves
otherwise. Authentication is ``trust`` for every address, replication included: these
servers only ever listen on ``host``, which is loopback by default and a bridge address
inside network namespaces for the chaos harness (``host`` is a parameter for that).

Synchronous replication is ``synchronous_standby_names = '*'`` on the primary, set only
once a standby streams: a promoted replica starts without it (a lone new primary must
accept writes) and gets it back from ``rebuild_replica``.

``teardown()`` (also ``__exit__`` and ``close``) always stops everything: ``pg_ctl stop
-m immediate``, then SIGKILL of any postmaster left, then the directories are removed.

Ports: tests in this repository use 55432-55439 (the chaos harness uses 56432 and up).
``require_pg_binaries()`` skips the test, saying what is missing, when initdb and friends
are not installed; with ``RELAYMESH_REQUIRE_PG=1`` the skip is a failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

__all__ = ["PgCluster", "PgServer", "require_pg_binaries"]

_TOOLS = ("initdb", "pg_ctl", "pg_basebackup", "psql")
_RUN_AS = "postgres"
_START_TIMEOUT_S = 60
_REPLICATION_TIMEOUT_S = 60


def _bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin that has every tool, else the PATH's."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in candidates:
        if all((Path(candidate) / tool).exists() for tool in _TOOLS):
            return Path(candidate)
    found = [shutil.which(tool) for tool in _TOOLS]
    if all(found):
        return Path(str(found[0])).parent
    return None


def require_pg_binaries() -> Path:
    """The directory holding initdb, pg_ctl, pg_basebackup and psql. Skips (fails with
    RELAYMESH_REQUIRE_PG=1) when they, or the ``postgres`` user needed as root, are
    missing."""
    reason = ""
    bindir = _bin_dir()
    if bindir is None:
        reason = (
            "PostgreSQL server binaries (" + ", ".join(_TOOLS) + ") not found in "
            "/usr/lib/postgresql/*/bin or on PATH: install the postgresql package"
        )
    elif os.geteuid() == 0:
        try:
            pwd.getpwnam(_RUN_AS)
        except KeyError:
            reason = f"running as root but there is no {_RUN_AS!r} user to run PostgreSQL as"
    if reason:
        if os.environ.get("RELAYMESH_REQUIRE_PG") == "1":
            pytest.fail(reason + " (RELAYMESH_REQUIRE_PG=1 makes this a failure)")
        pytest.skip(reason)
    assert bindir is not None
    return bindir


@dataclass(eq=False)
class PgServer:
    """One server of the pair: its port and data directory."""

    name: str
    port: int
    datadir: Path

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (first line of postmaster.pid), or None when not running."""
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


class PgCluster:
    """A primary and a synchronous streaming replica on ``host`` (see module docstring).

    ``start()`` (or entering the ``with`` block) brings both up; afterwards
    ``primary`` and ``replica`` name the servers in their current roles."""

    def __init__(
        self,
        ports: tuple[int, int] = (55432, 55433),
        *,
        host: str = "127.0.0.1",
        root: Path | None = None,
        bindir: Path | None = None,
    ) -> None:
        """``root`` (default: a new directory under the system temp dir) must be
        reachable by the ``postgres`` user: it holds the data dirs and the sockets."""
        self.host = host
        self.bindir = bindir or require_pg_binaries()
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="relaymesh-pgcluster-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self._chown(self.root)
        self.servers = [
            PgServer("pg-a", ports[0], self.root / "pg-a"),
            PgServer("pg-b", ports[1], self.root / "pg-b"),
        ]
        self.primary = self.servers[0]
        self.replica: PgServer | None = self.servers[1]
        self._generation = 0

    # -- context manager -----------------------------------------------------------------

    def __enter__(self) -> PgCluster:
        try:
            self.start()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.teardown()

    # -- what tests use ------------------------------------------------------------------

    def url(
        self,
        database: str = "postgres",
        *,
        user: str = "postgres",
        target_session_attrs: str = "read-write",
    ) -> str:
        """The multi-host store URL naming both servers, primary first at start."""
        hosts = ",".join(f"{self.host}:{s.port}" for s in self.servers)
        return f"postgresql://{user}@{hosts}/{database}?target_session_attrs={target_session_attrs}"

    def server_url(self, server: PgServer, database: str = "postgres") -> str:
        """A single-host URL for one server."""
        return f"postgresql://postgres@{self.host}:{server.port}/{database}"

    def start(self) -> None:
        """initdb the primary, start it, clone the replica from it, make it synchronous."""
        self._initdb(self.primary)
        self._start(self.primary)
        assert self.replica is not None
        self._clone(self.replica, self.primary)

    def create_database(self, name: str) -> None:
        """CREATE DATABASE on the primary (replicated to the standby like everything)."""
        self.sql(self.primary, f'CREATE DATABASE "{name}"')

    def stop_primary(self, mode: str = "immediate") -> PgServer:
        """``pg_ctl stop -m MODE`` the primary (immediate: like a crash). Returns it."""
        stopped = self.primary
        self._pg_ctl("stop", "-D", str(stopped.datadir), "-m", mode, "-w")
        return stopped

    def promote(self) -> PgServer:
        """``pg_ctl promote`` the replica and wait until it accepts writes. It is the
        primary afterwards; there is no replica until ``rebuild_replica``."""
        assert self.replica is not None, "no replica to promote"
        new = self.replica
        self._pg_ctl("promote", "-D", str(new.datadir), "-w", "-t", str(_START_TIMEOUT_S))
        self._wait(
            lambda: self._query(new, "SELECT pg_is_in_recovery()") == "f",
            f"{new.name} to leave recovery",
        )
        self.primary, self.replica = new, None
        return new

    def rebuild_replica(self, server: PgServer | None = None) -> PgServer:
        """Make ``server`` (default: the one that is not primary) a fresh synchronous
        replica of the current primary: stop it if running, wipe it, pg_basebackup."""
        target = server or next(s for s in self.servers if s is not self.primary)
        assert target is not self.primary, "cannot rebuild the primary as a replica"
        self._stop_quietly(target)
        shutil.rmtree(target.datadir, ignore_errors=True)
        self._clone(target, self.primary)
        return target

    def restart(self, server: PgServer, mode: str = "fast") -> None:
        """``pg_ctl restart -m MODE`` (smart, fast or immediate) and wait until it is up."""
        self._pg_ctl(
            "restart",
            "-D",
            str(server.datadir),
            "-m",
            mode,
            "-w",
            "-t",
            str(_START_TIMEOUT_S),
            "-l",
            str(self._logfile(server)),
        )

    def start_server(self, server: PgServer) -> None:
        """Start a stopped server again as it was (a primary stays a primary)."""
        self._start(server)

    def backend_pids(self, server: PgServer) -> list[int]:
        """The postmaster and every process it forked (backends, walsender, ...)."""
        top = server.pid
        if top is None:
            return []
        children: list[int] = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                # "pid (comm) state ppid ...": comm may hold spaces, so split after ")".
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            if int(fields[1]) == top:
                children.append(int(Path(stat).parent.name))
        return [top, *sorted(children)]

    def sql(self, server: PgServer, statement: str, database: str = "postgres") -> str:
        """Run one statement with psql on ``server``; its unaligned output."""
        return self._query(server, statement, database)

    def teardown(self) -> None:
        """Stop every server (immediate, then SIGKILL what is left); remove the files.
        Safe to call more than once and after any failure."""
        for server in self.servers:
            pid = server.pid
            if pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGCONT)  # a SIGSTOPped server cannot stop itself
                for child in self.backend_pids(server)[1:]:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(child, signal.SIGCONT)
            self._stop_quietly(server)
            pid = server.pid
            if pid is not None:
                for victim in self.backend_pids(server):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(victim, signal.SIGKILL)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    close = teardown

    # -- plumbing ------------------------------------------------------------------------

    def _as_postgres(self) -> list[str]:
        return ["runuser", "-u", _RUN_AS, "--"] if os.geteuid() == 0 else []

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(_RUN_AS)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _tool(self, name: str) -> str:
        return str(self.bindir / name)

    def _exec(self, *args: str, timeout_s: float = 120) -> str:
        cmd = [*self._as_postgres(), *args]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, check=False, cwd="/"
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
        return done.stdout

    def _pg_ctl(self, *args: str) -> None:
        self._exec(self._tool("pg_ctl"), *args)

    def _logfile(self, server: PgServer) -> Path:
        return self.root / f"{server.name}.log"

    def _initdb(self, server: PgServer) -> None:
        self._exec(
            self._tool("initdb"),
            "-D",
            str(server.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        with open(server.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
            # Speed over durability: these servers are killed, never their host.
            conf.write(
                "\n# relaymesh tests/pgcluster.py\n"
                f"listen_addresses = '{self.host}'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "fsync = off\n"
                "shared_buffers = 16MB\n"
                "max_connections = 100\n"
                "wal_level = replica\n"
                "max_wal_senders = 10\n"
                "wal_keep_size = 256MB\n"
                "hot_standby = on\n"
                "wal_receiver_status_interval = 1s\n"
                "log_min_messages = warning\n"
            )
        with open(server.datadir / "pg_hba.conf", "w", encoding="utf-8") as hba:
            hba.write(
                "local all all trust\n"
                "local replication all trust\n"
                "host all all 0.0.0.0/0 trust\n"
                "host replication all 0.0.0.0/0 trust\n"
            )

    def _start(self, server: PgServer) -> None:
        self._chown(self.root)
        self._pg_ctl(
            "start",
            "-D",
            str(server.datadir),
            "-o",
            f"-p {server.port}",
            "-w",
            "-t",
            str(_START_TIMEOUT_S),
            "-l",
            str(self._logfile(server)),
        )

    def _stop_quietly(self, server: PgServer) -> None:
        if server.pid is None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._exec(
                self._tool("pg_ctl"),
                "stop",
                "-D",
                str(server.datadir),
                "-m",
                "immediate",
                "-w",
                "-t",
                "20",
                timeout_s=30,
            )

    def _clone(self, replica: PgServer, primary: PgServer) -> None:
        """pg_basebackup ``replica`` from ``primary``, start it streaming, then make the
        primary wait for it (synchronous) and check that it does."""
        self._generation += 1
        # Synchronous commit would wait for the standby we are about to rebuild.
        self._set_sync(primary, "")
        self._exec(
            self._tool("pg_basebackup"),
            "-h",
            self.host,
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(replica.datadir),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        )
        # A copied standby.signal + primary_conninfo make it a standby; port is its own.
        with open(replica.datadir / "postgresql.auto.conf", "a", encoding="utf-8") as auto:
            auto.write(
                f"primary_conninfo = 'host={self.host} port={primary.port} user=postgres "
                f"application_name={replica.name}'\n"
                "synchronous_standby_names = ''\n"
            )
        self._start(replica)
        self._wait(
            lambda: (
                self._query(
                    primary,
                    "SELECT count(*) FROM pg_stat_replication "
                    f"WHERE application_name = '{replica.name}' AND state = 'streaming'",
                )
                == "1"
            ),
            f"{replica.name} to stream from {primary.name}",
        )
        self._set_sync(primary, "*")
        self._wait(
            lambda: (
                self._query(
                    primary,
                    "SELECT count(*) FROM pg_stat_replication "
                    f"WHERE application_name = '{replica.name}' AND sync_state = 'sync'",
                )
                == "1"
            ),
            f"{replica.name} to be a synchronous standby of {primary.name}",
        )
        self.replica = replica

    def _set_sync(self, primary: PgServer, names: str) -> None:
        self._query(primary, f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
        self._query(primary, "SELECT pg_reload_conf()")

    def _query(self, server: PgServer, statement: str, database: str = "postgres") -> str:
        return self._exec(
            self._tool("psql"),
            "-X",
            "-q",
            "-h",
            self.host,
            "-p",
            str(server.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-tAc",
            statement,
            timeout_s=30,
        ).strip()

    def _wait(
        self, ok: Callable[[], bool], what: str, timeout_s: float = _REPLICATION_TIMEOUT_S
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if ok():
                    return
            except RuntimeError:
                pass  # not up yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout_s}s waiting for {what}")
            time.sleep(0.1)
