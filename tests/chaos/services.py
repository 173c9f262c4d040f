"""Private, restartable PostgreSQL and Redis for the chaos session (stdlib only).

`python -m tests.chaos.launch` starts one of each in a tmp dir and describes them in the
environment (`to_env`), so that a test can take the same instance down and up again:

    PrivatePostgres.from_env().restart()            # pg_ctl restart -m fast
    PrivatePostgres.from_env().restart(crash=True)  # SIGKILL, then start with crash recovery
    PrivateRedis.from_env().restart(down_seconds=2)

Each instance keeps its state (data dir, pid file, log) in its root dir, never in the object,
so the launcher can stop whatever instance a test process left running on that port.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

PG_ROOT_ENV, PG_PORT_ENV = "REFINERY_CHAOS_PG_ROOT", "REFINERY_CHAOS_PG_PORT"
REDIS_ROOT_ENV, REDIS_PORT_ENV = "REFINERY_CHAOS_REDIS_ROOT", "REFINERY_CHAOS_REDIS_PORT"

# No fsync: commits and checkpoints stay in the page cache, which a killed server does not lose
# (only a machine crash would). synchronous_commit stays on: off would let restart(crash=True)
# lose transactions that were reported committed, which chaos tests must not mistake for a bug.
_PG_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
fsync = off
synchronous_commit = on
full_page_writes = off
shared_buffers = 32MB
max_connections = 50
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed orphan may stay one if pid 1 is slow to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _from_env(root_var: str, port_var: str) -> tuple[Path, int]:
    try:
        return Path(os.environ[root_var]), int(os.environ[port_var])
    except KeyError as exc:
        raise RuntimeError(f"{exc.args[0]} is not set: run chaos tests with `python -m tests.chaos.launch`") from None


def _pg_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb (Debian's layout)."""
    dirs = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    if not dirs:
        raise RuntimeError("no /usr/lib/postgresql/*/bin/initdb: install the Debian package postgresql")
    return max(dirs, key=lambda d: [int(n) for n in re.findall(r"\d+", d.parent.name)] or [0])


class PrivatePostgres:
    """A throwaway PostgreSQL cluster in `root` on 127.0.0.1:`port`, with a `refinery` database.

    initdb and pg_ctl refuse to run as root: as root they run as the `postgres` user (via
    runuser), root is chowned to it, and every directory above root must be traversable by it.
    """

    def __init__(self, root: Path, port: int) -> None:
        self.root = Path(root)
        self.port = port
        self.data_dir = self.root / "pgdata"
        self.log_path = self.root / "postgres.log"
        self.bin_dir = _pg_bin_dir()

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/refinery"

    def to_env(self) -> dict[str, str]:
        return {PG_ROOT_ENV: str(self.root), PG_PORT_ENV: str(self.port)}

    @classmethod
    def from_env(cls) -> PrivatePostgres:
        return cls(*_from_env(PG_ROOT_ENV, PG_PORT_ENV))

    def start(self) -> None:
        """initdb (first time only), start and wait until it accepts connections; create `refinery`."""
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            self.root.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                subprocess.run(["chown", "-R", "postgres:postgres", str(self.root)], check=True)
            self._run(["initdb", "-D", str(self.data_dir), "--auth=trust", "-U", "postgres", "--no-sync",
                       "--no-instructions", "-E", "UTF8", "--locale=C.UTF-8"])
            with open(self.data_dir / "postgresql.conf", "a") as conf:
                conf.write(_PG_CONF.format(port=self.port, socket_dir=self.root))
        self._pg_ctl("start")
        if fresh:
            subprocess.run([str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                            "refinery"], check=True, capture_output=True, text=True)

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop -m `mode` (smart, fast, immediate); a no-op when it is not running."""
        if self._postmaster_pid() is None:
            return
        try:
            self._pg_ctl("stop", "-m", mode)
        except RuntimeError:
            self.kill()  # wedged: make sure nothing of ours outlives the session

    def restart(self, *, crash: bool = False) -> float:
        """Restart on the same port and data; returns the seconds it was down.

        crash=False: `pg_ctl restart -m fast` (backends terminated, clean shutdown checkpoint).
        crash=True: SIGKILL every server process, then start (crash recovery replays the WAL).
        """
        started = time.monotonic()
        if crash:
            self.kill()
            self._pg_ctl("start")
        else:
            self._pg_ctl("restart", "-m", "fast")
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the postmaster and its children at once, as a power cut would; wait until they are gone."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        pids = [pid, *self._children(pid)]
        for p in pids:  # the postmaster first, so that it cannot start a crash cycle of its own
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not _wait_gone(pids, timeout=10):
            raise RuntimeError(f"postgres processes {pids} survived SIGKILL")
        # The postmaster stays a zombie until pid 1 reaps it (seconds, here), and a new postmaster
        # takes a zombie's pid in a lock file for a live server: the lock files are stale, drop them.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        for lock in self.root.glob(".s.PGSQL.*.lock"):
            lock.unlink(missing_ok=True)

    def _postmaster_pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    @staticmethod
    def _children(pid: int) -> list[int]:
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1] == str(pid):  # fields: state, ppid, ...
                children.append(int(stat.parent.name))
        return children

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run(["pg_ctl", action, "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t", "60", *args])

    def _run(self, cmd: list[str]) -> None:
        cmd = [str(self.bin_dir / cmd[0]), *cmd[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited with {result.returncode}:\n{result.stdout}{result.stderr}"
                               f"\n--- {self.log_path}:\n{_tail(self.log_path)}")


class PrivateRedis:
    """A throwaway `redis-server` (no persistence) on 127.0.0.1:`port`; its pid file lives in `root`."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = Path(root)
        self.port = port
        self.pid_path = self.root / "redis.pid"
        self.log_path = self.root / "redis.log"
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def to_env(self) -> dict[str, str]:
        return {REDIS_ROOT_ENV: str(self.root), REDIS_PORT_ENV: str(self.port)}

    @classmethod
    def from_env(cls) -> PrivateRedis:
        return cls(*_from_env(REDIS_ROOT_ENV, REDIS_PORT_ENV))

    def start(self, timeout: float = 30) -> None:
        """Start redis-server in its own session and wait until it answers PING."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.ping():
            raise RuntimeError(f"something already answers on 127.0.0.1:{self.port}")
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(self.root), "--daemonize", "no"]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          cwd=self.root, start_new_session=True)
        self.pid_path.write_text(str(self._proc.pid))
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self._proc.poll() is not None or time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not come up:\n{_tail(self.log_path)}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10) -> None:
        """SHUTDOWN NOSAVE, wait for the process in the pid file to exit, SIGKILL it if it does not."""
        pid = self._pid()
        try:
            self._command(b"SHUTDOWN NOSAVE")
        except OSError:
            pass  # not running, or it closed the connection while shutting down (the normal case)
        if pid is not None and not self._wait_exit(pid, timeout):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._wait_exit(pid, timeout)
        if self._proc is not None:
            self._proc.poll()  # reap our first instance if a test process stopped it
        self.pid_path.unlink(missing_ok=True)

    def restart(self, down_seconds: float = 0) -> float:
        """Stop, stay down `down_seconds`, start on the same port; returns the seconds it was down."""
        started = time.monotonic()
        self.stop()
        time.sleep(down_seconds)
        self.start()
        return time.monotonic() - started

    def ping(self) -> bool:
        try:
            return self._command(b"PING").startswith(b"+PONG")
        except OSError:
            return False

    def flushall(self) -> None:
        """Delete every key (each chaos test starts from an empty broker)."""
        if not self._command(b"FLUSHALL").startswith(b"+OK"):
            raise RuntimeError("redis FLUSHALL failed")

    def _command(self, command: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(command + b"\r\n")
            return sock.recv(64)

    def _pid(self) -> int | None:
        """The pid in the pid file if that process is still a redis-server (pids get reused)."""
        try:
            pid = int(self.pid_path.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"redis-server" in cmdline else None

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:  # our child: reap it
            try:
                self._proc.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        return _wait_gone([pid], timeout)
