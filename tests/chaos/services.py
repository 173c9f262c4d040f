"""Private, restartable PostgreSQL, Redis and RabbitMQ for the chaos session (stdlib only).

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
from collections.abc import Callable
from pathlib import Path

PG_ROOT_ENV, PG_PORT_ENV = "REFINERY_CHAOS_PG_ROOT", "REFINERY_CHAOS_PG_PORT"
REDIS_ROOT_ENV, REDIS_PORT_ENV = "REFINERY_CHAOS_REDIS_ROOT", "REFINERY_CHAOS_REDIS_PORT"
RABBIT_ROOT_ENV, RABBIT_PORT_ENV = "REFINERY_CHAOS_RABBIT_ROOT", "REFINERY_CHAOS_RABBIT_PORT"
RABBIT_CONSUMER_TIMEOUT_ENV = "REFINERY_CHAOS_RABBIT_CONSUMER_TIMEOUT_MS"

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
            self._run(
                [
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "--no-instructions",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            )
            with open(self.data_dir / "postgresql.conf", "a") as conf:
                conf.write(_PG_CONF.format(port=self.port, socket_dir=self.root))
        self._pg_ctl("start")
        if fresh:
            subprocess.run(
                [str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "refinery"],
                check=True,
                capture_output=True,
                text=True,
            )

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
            raise RuntimeError(
                f"{' '.join(cmd)} exited with {result.returncode}:\n{result.stdout}{result.stderr}"
                f"\n--- {self.log_path}:\n{_tail(self.log_path)}"
            )


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
        cmd = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
            "--daemonize",
            "no",
        ]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                start_new_session=True,
            )
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


# RabbitMQ 3.10 checks the consumer (delivery acknowledgement) timeout only on a channel's
# periodic `tick` (rabbit_channel:handle_info(tick, ...) -> evaluate_consumer_timeout/1), armed
# with erlang:send_after(application:get_env(rabbit, channel_tick_interval)) -- 60000 ms by
# default, and not settable from rabbitmq.conf. So a channel is closed with PRECONDITION_FAILED
# between consumer_timeout and consumer_timeout + tick after the delivery: keep the tick short.
_RABBIT_TICK_MS = 1000
_RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")  # the real scripts: /usr/sbin/rabbitmqctl would su to `rabbitmq`


class PrivateRabbitMQ:
    """A throwaway RabbitMQ node `chaos-<port>@localhost` on 127.0.0.1:`port`, everything in `root`.

    No plugins. Its own epmd (on a free port, started and stopped with the node, so the system
    broker's epmd is never used), its own Erlang distribution port, and its own HOME (root/home,
    where the node writes the .erlang.cookie that `ctl` needs; root's ~/.erlang.cookie is never
    touched). `consumer_timeout_ms` sets rabbit's consumer_timeout, and a 1 s channel tick makes
    RabbitMQ enforce it within consumer_timeout_ms + 1 s. The ports of the running instance are
    kept in root/ports, so that `from_env()` in another process can stop or restart it.
    """

    def __init__(self, root: Path, port: int, consumer_timeout_ms: int | None = None) -> None:
        self.root = Path(root)
        self.port = port
        self.consumer_timeout_ms = consumer_timeout_ms
        self.node = f"chaos-{port}@localhost"
        self.home = self.root / "home"
        self.log_path = self.root / "log" / f"{self.node}.log"
        self.out_path = self.root / "rabbitmq-server.out"  # the server's stdout/stderr (boot errors)
        self.server_pid_path = self.root / "rabbitmq-server.pid"  # the rabbitmq-server sh wrapper
        self.beam_pid_path = self.root / "beam.pid"  # written by the node itself (RABBITMQ_PID_FILE)
        self.epmd_pid_path = self.root / "epmd.pid"
        self.ports_path = self.root / "ports"  # "<dist port> <epmd port>"
        self._proc: subprocess.Popen | None = None
        self._epmd: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def to_env(self) -> dict[str, str]:
        env = {RABBIT_ROOT_ENV: str(self.root), RABBIT_PORT_ENV: str(self.port)}
        if self.consumer_timeout_ms is not None:
            env[RABBIT_CONSUMER_TIMEOUT_ENV] = str(self.consumer_timeout_ms)
        return env

    @classmethod
    def from_env(cls) -> PrivateRabbitMQ:
        timeout = os.environ.get(RABBIT_CONSUMER_TIMEOUT_ENV)
        return cls(*_from_env(RABBIT_ROOT_ENV, RABBIT_PORT_ENV), consumer_timeout_ms=int(timeout) if timeout else None)

    def start(self, timeout: float = 60) -> None:
        """Start epmd and then rabbitmq-server in their own sessions; wait until AMQP answers."""
        for sub in ("home", "mnesia", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if self.ping():
            raise RuntimeError(f"something already answers AMQP on 127.0.0.1:{self.port}")
        self._write_config()
        dist_port, epmd_port = free_port(), free_port()
        self.ports_path.write_text(f"{dist_port} {epmd_port}")
        env = self._env()
        try:
            with open(self.root / "epmd.out", "ab") as log:
                self._epmd = subprocess.Popen(
                    ["epmd", "-port", str(epmd_port), "-address", "127.0.0.1"],
                    env={"PATH": env["PATH"], "HOME": env["HOME"]},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.root,
                    start_new_session=True,
                )
            self.epmd_pid_path.write_text(str(self._epmd.pid))
            # The node must find our epmd listening: otherwise it would spawn a daemon epmd of its own.
            self._wait_for(lambda: _port_open(epmd_port), self._epmd, timeout, "epmd")
            with open(self.out_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [str(_RABBIT_BIN / "rabbitmq-server")],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.root,
                    start_new_session=True,
                )
            self.server_pid_path.write_text(str(self._proc.pid))
            self._wait_for(self.ping, self._proc, timeout, "rabbitmq-server")
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the node (a clean shutdown, ~2-3 s), SIGKILL whatever of it outlives `timeout`,
        then stop our epmd. A no-op for whatever is not running."""
        pids = self._node_pids()
        beams = [pid for pid in pids if b"beam.smp" in _cmdline(pid)]
        for pid in beams or pids:  # the beam shuts down cleanly on SIGTERM; so does the sh wrapper (it forwards it)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if pids and not self._wait_exit(pids, timeout):
            self.kill()
        self._reap()
        self._stop_epmd(timeout)

    def kill(self) -> None:
        """SIGKILL every process of the node at once, as a crash would; our epmd keeps running."""
        pids = self._node_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not self._wait_exit(pids, timeout=10):
            raise RuntimeError(f"rabbitmq processes {pids} survived SIGKILL")
        self._reap()
        self.beam_pid_path.unlink(missing_ok=True)

    def restart(self, down_seconds: float = 0, *, crash: bool = False) -> float:
        """Stop (or SIGKILL, crash=True), stay down `down_seconds`, start on the same port and data;
        returns the seconds it was down."""
        started = time.monotonic()
        if crash:
            self.kill()
        self.stop()
        time.sleep(down_seconds)
        self.start()
        return time.monotonic() - started

    def ping(self) -> bool:
        """True when the AMQP listener answers a protocol header with connection.start."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                frame = sock.recv(11)
        except OSError:
            return False
        # frame type 1 (method), channel 0, size (4 bytes), class 10 (connection), method 10 (start)
        return len(frame) >= 11 and frame[0] == 1 and frame[7:11] == b"\x00\x0a\x00\x0a"

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """Run `rabbitmqctl -n <node> args...` against this node (its cookie, its epmd); returns stdout."""
        cmd = [str(_RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args]
        result = subprocess.run(
            cmd,
            env=self._env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited with {result.returncode}:\n{result.stdout}{result.stderr}")
        return result.stdout

    def _write_config(self) -> None:
        conf = [f"listeners.tcp.default = 127.0.0.1:{self.port}", "loopback_users.guest = true"]
        advanced = "[]."
        if self.consumer_timeout_ms is not None:
            conf.append(f"consumer_timeout = {self.consumer_timeout_ms}")
            advanced = f"[{{rabbit, [{{channel_tick_interval, {_RABBIT_TICK_MS}}}]}}]."
        (self.root / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        (self.root / "advanced.config").write_text(advanced + "\n")
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq-env.conf").write_text("")  # instead of /etc/rabbitmq/rabbitmq-env.conf

    def _env(self) -> dict[str, str]:
        """The environment for rabbitmq-server, rabbitmqctl and epmd: nothing from the system broker's."""
        dist_port, epmd_port = self.ports_path.read_text().split()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_")) and k not in ("NODENAME", "HOME")
        }
        root = self.root.resolve()
        env.update(
            {
                "HOME": str(root / "home"),
                "ERL_EPMD_PORT": epmd_port,
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": dist_port,
                "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
                "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
                "RABBITMQ_ENABLED_PLUGINS": "",
                "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
                "RABBITMQ_LOG_BASE": str(root / "log"),
                "RABBITMQ_PID_FILE": str(root / "beam.pid"),
                # the distribution listener (and rabbitmqctl's) on loopback only, not 0.0.0.0
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
                "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            }
        )
        return env

    def _wait_for(self, ready: Callable[[], bool], proc: subprocess.Popen, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() >= deadline:
                raise RuntimeError(
                    f"{what} for {self.node} did not come up:\n{_tail(self.out_path)}"
                    f"\n--- {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def _node_pids(self) -> list[int]:
        """Every live process started for this node: the sh wrapper, the beam, its helpers (erl_child_setup,
        inet_gethost, the disk monitor's sh) and any rabbitmqctl, found by the environment they inherit."""
        markers = (
            f"RABBITMQ_NODENAME={self.node}\0".encode(),
            f"RABBITMQ_MNESIA_BASE={self.root.resolve() / 'mnesia'}\0".encode(),
        )
        pids = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                data = b"\0" + environ.read_bytes()
            except OSError:
                continue
            pid = int(environ.parent.name)
            if all(b"\0" + m in data for m in markers) and pid != os.getpid() and _alive(pid):
                pids.append(pid)
        return pids

    def _wait_exit(self, pids: list[int], timeout: float) -> bool:
        if self._proc is not None and self._proc.pid in pids:  # our child: reap it (it waits for the beam)
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
        return _wait_gone(pids, timeout)

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.poll()
        self.server_pid_path.unlink(missing_ok=True)

    def _stop_epmd(self, timeout: float) -> None:
        try:
            pid = int(self.epmd_pid_path.read_text())
        except (OSError, ValueError):
            pid = None
        if pid is not None and b"epmd" in _cmdline(pid) and _alive(pid):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                if self._epmd is not None and self._epmd.pid == pid:
                    try:
                        self._epmd.wait(timeout=timeout)
                        break
                    except subprocess.TimeoutExpired:
                        continue
                if _wait_gone([pid], timeout):
                    break
        if self._epmd is not None:
            self._epmd.poll()
        self.epmd_pid_path.unlink(missing_ok=True)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
