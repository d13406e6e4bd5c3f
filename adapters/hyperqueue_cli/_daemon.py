"""``serve --detach``, the pid file, and ``stop``.

The pid file (``./hyperqueue.pid`` by default) is written by the server itself once it
listens, and removed by it when it exits after draining. Its first line is the pid (so
``kill $(head -n1 hyperqueue.pid)`` works), the second the URL it serves, the third its
log file (PostgreSQL's ``postmaster.pid`` has the same layout idea). A server refuses to
start when its pid file names a live process; a file whose process is gone is stale and
replaced.

``serve --detach`` starts the same ``serve`` command as a new session in the background,
with its output appended to ``--log-file``, and returns once the server answers
``/health/live`` (or with the log's last lines and the child's exit status when it did
not start). ``stop`` sends SIGTERM, which drains: running jobs finish within the drain
timeout, then the process exits; it waits up to ``--timeout`` seconds and exits 0 once
the process is gone, :data:`~._exit.GAVE_UP` when it still runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from . import _exit
from ._exit import CliError

__all__ = [
    "DEFAULT_LOG_FILE",
    "DEFAULT_PID_FILE",
    "PidFile",
    "alive",
    "check_pid_file",
    "read_pid_file",
    "remove_pid_file",
    "start_detached",
    "stop_server",
    "write_pid_file",
]

DEFAULT_PID_FILE = Path("hyperqueue.pid")
DEFAULT_LOG_FILE = Path("hyperqueue.log")

_STARTED: list[subprocess.Popen[bytes]] = []
"""The detached servers started by this process: they outlive their ``Popen`` by design,
which must not be collected (and warn) while they run."""


@dataclass(frozen=True, slots=True)
class PidFile:
    """What a pid file says: the process, the URL it serves and its log."""

    path: Path
    pid: int
    url: str | None
    log: str | None


def read_pid_file(path: Path) -> PidFile | None:
    """The pid file at ``path``, or ``None`` when there is none or it is not one."""
    try:
        lines = path.read_text().splitlines()
    except (FileNotFoundError, IsADirectoryError):
        return None
    try:
        pid = int(lines[0].strip())
    except (IndexError, ValueError):
        return None
    url = lines[1].strip() if len(lines) > 1 and lines[1].strip() else None
    log = lines[2].strip() if len(lines) > 2 and lines[2].strip() else None
    return PidFile(path=path, pid=pid, url=url, log=log)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, exited but not reaped, is not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the signal test is all there is
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def check_pid_file(path: Path) -> None:
    """Refuse to start while ``path`` names a live process (exit status 6)."""
    info = read_pid_file(path)
    if info is not None and alive(info.pid) and info.pid != os.getpid():
        where = f" at {info.url}" if info.url else ""
        raise CliError(
            f"a server already runs with pid file {path} (pid {info.pid}{where}): "
            "stop it with `hyperqueue stop` or name another --pid-file",
            _exit.CONFLICT,
        )


def write_pid_file(path: Path, url: str, log: Path | None = None) -> None:
    """Write this process's pid file (atomically: a reader never sees half of it)."""
    check_pid_file(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(f"{os.getpid()}\n{url}\n{log.resolve() if log else ''}\n")
    temporary.replace(path)


def remove_pid_file(path: Path, pid: int | None = None) -> None:
    """Remove ``path`` if it names ``pid`` (this process by default)."""
    info = read_pid_file(path)
    if info is not None and info.pid == (os.getpid() if pid is None else pid):
        path.unlink(missing_ok=True)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_detached(
    argv: list[str], *, pid_file: Path, log_file: Path, timeout: float = 30.0
) -> PidFile:
    """Run ``hyperqueue serve *argv --pid-file ...`` in the background and wait until it
    answers; raises :class:`CliError` with the log's tail when it does not."""
    check_pid_file(pid_file)
    pid_file.unlink(missing_ok=True)  # stale: its process is gone
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "hyperqueue_cli",
        "serve",
        *argv,
        "--pid-file",
        str(pid_file),
        "--log-file",
        str(log_file),
    ]
    with log_file.open("ab") as log:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # not in the shell's process group: no Ctrl-C from it
        )
    deadline = time.monotonic() + timeout
    while True:
        code = child.poll()
        if code is not None:
            raise CliError(
                f"the server did not start (exit status {code}); the end of {log_file}:\n"
                + _tail(log_file),
                code if code in (_exit.UNREACHABLE, _exit.USAGE, _exit.CONFLICT) else 1,
            )
        info = read_pid_file(pid_file)
        if info is not None and info.pid == child.pid and info.url:
            try:
                if httpx.get(f"{info.url}/health/live", timeout=1.0).status_code == 200:
                    _STARTED.append(child)
                    return info
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            child.terminate()
            child.wait(10)
            raise CliError(
                f"the server did not answer within {timeout:g} s and was stopped; the end "
                f"of {log_file}:\n" + _tail(log_file),
                _exit.FAILED,
            )
        time.sleep(0.05)


def stop_server(pid_file: Path, *, timeout: float) -> float:
    """SIGTERM the server of ``pid_file`` and wait for it to drain and exit; returns the
    seconds it took."""
    info = read_pid_file(pid_file)
    if info is None:
        raise CliError(f"no server running: no pid file at {pid_file}", _exit.NOT_FOUND)
    if not alive(info.pid) or not _is_hyperqueue(info.pid):
        pid_file.unlink(missing_ok=True)
        raise CliError(
            f"no server running: pid {info.pid} of {pid_file} is gone (stale pid file removed)",
            _exit.NOT_FOUND,
        )
    started = time.monotonic()
    try:
        os.kill(info.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise CliError(f"not allowed to signal pid {info.pid}", _exit.AUTH) from None
    while alive(info.pid):
        if time.monotonic() - started > timeout:
            raise CliError(
                f"pid {info.pid} still runs {timeout:g} s after SIGTERM (jobs may still be "
                f"draining; `kill -9 {info.pid}` ends it at once)",
                _exit.GAVE_UP,
            )
        time.sleep(0.05)
    remove_pid_file(pid_file, info.pid)  # the server removes it; a killed one cannot
    return time.monotonic() - started


def _is_hyperqueue(pid: int) -> bool:
    """Whether ``pid`` looks like a hyperqueue process (a pid reused by another program
    after a crash must not get our SIGTERM); ``True`` where it cannot be told."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"hyperqueue" in command
