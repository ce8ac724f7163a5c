"""A throwaway PostgreSQL cluster for tests: Debian's ``postgresql`` package (installed with
apt-get when missing and possible), ``initdb`` into a temporary directory as an unprivileged
user, the server listening on a Unix socket in that directory only (no TCP port to collide
with), one fresh database per test, everything removed at the end.

    with PostgresCluster.start() as cluster:
        with cluster.database() as url:   # postgresql+psycopg://postgres@/t_...?host=...
            ...
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SERVER_USER = "postgres"  # the package creates it; the server refuses to run as root


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here and no way to install them."""


def server_bindir() -> Path:
    """The directory of ``initdb`` / ``pg_ctl``, installing Debian's ``postgresql`` if needed."""
    found = _find_bindir()
    if found is not None:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise PostgresUnavailable(
            "PostgreSQL is not installed and cannot be installed here (need root + apt-get): "
            "run `apt-get install -y postgresql`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "postgresql"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise PostgresUnavailable(f"`{' '.join(cmd)}` failed: {done.stderr[-500:]}")
    found = _find_bindir()
    if found is None:
        raise PostgresUnavailable("apt-get installed postgresql but no initdb was found")
    return found


def _find_bindir() -> Path | None:
    # Debian keeps the server tools under /usr/lib/postgresql/<major>/bin, off PATH.
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    on_path = shutil.which("initdb")
    for initdb in [*([on_path] if on_path else []), *candidates]:
        bindir = Path(initdb).resolve().parent
        if (bindir / "pg_ctl").exists():
            return bindir
    return None


@dataclass
class PostgresCluster:
    bindir: Path
    root: Path  # data directory and socket directory live under it
    port: int
    user: str | None  # OS user the server runs as; None: the current (unprivileged) user

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3 driver) over the cluster's Unix socket."""
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def conninfo(self, database: str = "postgres") -> str:
        """The same connection as a libpq conninfo string, for psycopg directly."""
        return f"host={self.socket_dir} port={self.port} user=postgres dbname={database}"

    @classmethod
    @contextmanager
    def start(cls) -> Iterator[PostgresCluster]:
        bindir = server_bindir()
        user = SERVER_USER if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix="pg-cluster-"))
        cluster = cls(bindir=bindir, root=root, port=_free_port(), user=user)
        try:
            cluster.socket_dir.mkdir()
            if user is not None:
                entry = pwd.getpwnam(user)
                for path in (root, cluster.socket_dir):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            cluster._run("initdb", "-D", str(root / "data"), "-U", "postgres", "--auth=trust",
                         "--encoding=UTF8", "--no-instructions")
            options = (f"-c listen_addresses='' -k {cluster.socket_dir} -p {cluster.port} "
                       "-c max_connections=200 -c shared_buffers=32MB")
            cluster._run("pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"),
                         "-o", options, "-w", "-t", "60", "start")
            yield cluster
        finally:
            if (root / "data" / "postmaster.pid").exists():
                cluster._run("pg_ctl", "-D", str(root / "data"), "-m", "immediate", "-w", "stop",
                             check=False)
            shutil.rmtree(root, ignore_errors=True)

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database for one test; yields its URL, drops it afterwards."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield self.url(name)
        finally:
            with psycopg.connect(self.conninfo(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if check and done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-1500:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr[-1500:]}{tail}")


def _free_port() -> int:
    # The port only names the socket file (.s.PGSQL.<port>); a free TCP port avoids clashing
    # with a server someone else started in the same socket directory convention.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
