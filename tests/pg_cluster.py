"""A throwaway PostgreSQL cluster for tests: initdb in a temporary folder, loopback only.

:func:`start_cluster` runs ``initdb`` and ``pg_ctl start`` on a free port of 127.0.0.1 (no
Unix socket, trust authentication, fsync off); :meth:`Cluster.stop` stops it and removes the
folder. ``initdb`` refuses to run as root: as root the cluster belongs to an unprivileged user
(``$NAS_PRUNE_TEST_PG_USER``, else ``postgres``, else ``nobody``) and the server runs as that
user. :func:`missing` says why the cluster cannot run here (no server binaries, no psycopg),
or None.
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
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "nasprune"


def server_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: ``$NAS_PRUNE_TEST_PG_BIN``, PATH, or the newest
    ``/usr/lib/postgresql/*/bin`` (Debian and Ubuntu keep them off PATH)."""
    candidates = [os.environ.get("NAS_PRUNE_TEST_PG_BIN")]
    on_path = shutil.which("initdb")
    candidates.append(str(Path(on_path).parent) if on_path else None)
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                         if Path(p).parent.name.isdigit() else 0, reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def _server_user() -> pwd.struct_passwd | None:
    """As root, the unprivileged account that owns the cluster; None when not root."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("NAS_PRUNE_TEST_PG_USER"), "postgres", "nobody"):
        if not name:
            continue
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def missing() -> str | None:
    """Why a cluster cannot be started here, or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'nas-prune[postgres]')"
    if server_bin() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql or set NAS_PRUNE_TEST_PG_BIN"
    if os.geteuid() == 0 and _server_user() is None:
        return "running as root and no unprivileged user (postgres, nobody) to run the server as"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    root: Path
    port: int
    bin: Path
    user: pwd.struct_passwd | None

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database,
                               autocommit=True, connect_timeout=10)

    def new_database(self) -> str:
        """Create an empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self.connect() as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        _run(self, [str(self.bin / "pg_ctl"), "stop", "-D", str(self.root / "data"), "-m", "immediate", "-w"],
             check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _run(cluster: Cluster, cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
    kw = {}
    if cluster.user is not None:
        kw = dict(user=cluster.user.pw_uid, group=cluster.user.pw_gid, extra_groups=[],
                  env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cluster.root),
                       "LC_ALL": "C"})
    res = subprocess.run(cmd, cwd=cluster.root, capture_output=True, text=True, timeout=120, **kw)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stdout}{res.stderr}")
    return res


def start_cluster() -> Cluster:
    """initdb + pg_ctl start on 127.0.0.1:<free port>; the caller calls :meth:`Cluster.stop`."""
    root = Path(tempfile.mkdtemp(prefix="nas-prune-pg-"))
    user = _server_user()
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    cluster = Cluster(root=root, port=_free_port(), bin=server_bin(), user=user)
    try:
        _run(cluster, [str(cluster.bin / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER, "--auth=trust",
                       "--no-sync", "-E", "UTF8", "--locale=C"])
        options = (f"-c listen_addresses=127.0.0.1 -p {cluster.port} -c unix_socket_directories='' "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                   "-c shared_buffers=16MB")
        _run(cluster, [str(cluster.bin / "pg_ctl"), "start", "-D", str(root / "data"), "-w", "-t", "60",
                       "-l", str(root / "server.log"), "-o", options])
    except BaseException:
        log = root / "server.log"
        detail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
        cluster.stop()
        if detail:
            raise RuntimeError(f"PostgreSQL did not start; its log ends with:\n{detail}") from None
        raise
    return cluster
