"""Die with the parent: a child asks Linux to signal it when the process that started it dies.

A process sets this on itself (``prctl(PR_SET_PDEATHSIG)``), at its own start, and then checks
that its parent is still the one that started it: a parent that died before the request leaves
the child with another parent and no signal to come, so the child exits at once. Nothing runs
between fork and exec (``preexec_fn`` is unsafe once the parent has threads).

Two users: the trainer (``python -m trainers run SPEC --parent-pid PID``, which the supervisor
starts: SIGKILL, so a lost worker leaves no trainer on the GPU), and ``manage.py runstack``,
whose children are other programs: they start through ``python -m trainers.deathsig`` (see
:func:`command`), which sets the signal and then execs the real command.

Standard library only (the web process imports this module). Elsewhere than Linux it does nothing.
"""

import os
import signal
import sys

__all__ = ["die_with_parent", "command", "ParentGone"]

PR_SET_PDEATHSIG = 1


class ParentGone(SystemExit):
    """The parent died before the death signal was set: the caller is an orphan and must not run."""


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent dies; raise :class:`ParentGone` when the
    parent is no longer `parent_pid` (it died before the request could take effect)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))
    except (OSError, AttributeError):  # no libc.so.6 (another C library): best effort
        return
    if os.getppid() != parent_pid:
        raise ParentGone(f"parent process {parent_pid} is gone; not starting")


def command(argv: list[str], *, sig: int = signal.SIGTERM, python: str | None = None) -> list[str]:
    """`argv` started through this module: it gets `sig` when the calling process dies."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [python or sys.executable, "-m", "trainers.deathsig", str(int(sig)), str(os.getpid()), *argv]


def main(args: list[str]) -> None:
    """``python -m trainers.deathsig SIG PARENT_PID PROGRAM [ARG...]``: set the death signal, exec PROGRAM."""
    if len(args) < 3:
        raise SystemExit("usage: python -m trainers.deathsig SIG PARENT_PID PROGRAM [ARG...]")
    die_with_parent(int(args[1]), int(args[0]))
    os.execv(args[2], args[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
