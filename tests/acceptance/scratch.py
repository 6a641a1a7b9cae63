"""A throw-away PostgreSQL cluster on a free port, that a test may stop and start at will."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ScratchCluster:
    """initdb + pg_ctl, run as the postgres user when the tests run as root."""

    def __init__(self, **server_settings: object) -> None:
        self.server_settings = server_settings
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        found = shutil.which("pg_ctl")
        pg_ctl = binaries[-1] if binaries else found
        if pg_ctl is None:
            raise RuntimeError("pg_ctl not found: install PostgreSQL's server binaries")
        self.bindir = Path(pg_ctl).parent
        self.root = Path(tempfile.mkdtemp(prefix="aio-async-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as admin:
            admin.execute("CREATE DATABASE aio_async")

    def _run(self, tool: str, *arguments: str) -> None:
        subprocess.run(
            [*self.as_postgres, str(self.bindir / tool), *arguments],
            check=True,
            capture_output=True,
            cwd=self.root,
        )

    def dsn(self, database: str = "aio_async") -> str:
        """A libpq connection string for ``database`` on this cluster."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        options += "".join(f" -c {name}={value}" for name, value in self.server_settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        """Stop the server at once, dropping every connection (mode fast)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        """Stop the server if it runs and delete its files."""
        subprocess.run(
            [*self.as_postgres, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)
