"""Every process of a gateway, found and stopped however the gateway ends.

A gateway is many processes: the launcher (`steergate serve`, or a test session or benchmark that
calls serving.launcher), Ray's GCS and raylet, Ray's agents and workers (Serve's controller, proxy,
HAProxy manager, replicas), HAProxy and vLLM's engine-core and worker processes. Ray puts its workers
in process groups of their own, so a signal to the launcher's group never reaches them, and a
launcher that dies without running Ray's shutdown leaves them behind. Measured before this module:
HAProxy kept the gateway's port (and every later start failed), vLLM's worker kept its memory, and
Ray's dashboard and runtime-env agents lived on. Their environment cannot mark them either: Ray and
vLLM rename their processes with setproctitle, which overwrites /proc/PID/environ.

So the gateway's processes are found by ancestry:
- the launcher makes itself a child subreaper (PR_SET_CHILD_SUBREAPER): a process of the gateway
  whose parent dies is re-parented to the launcher, not to init, so while the launcher lives every
  process of the gateway is its descendant, and `stop_descendants` at the end of a stop finds them all;
- a watchdog (`start_watchdog`: `python -m serving.processes watch ...`, in a session of its own so
  that group signals miss it) records the launcher's descendants every second in
  `<runtime dir>/processes.json`, waits for the launcher to exit however it exits (pidfd), and
  stops whatever it recorded that is still alive, and its descendants;
- a new start on a port (`recover_port`) reads that file: a live launcher there is a running gateway
  (an error that says so); a dead one left a stale instance, whose processes are reported and
  stopped. A port held by anything else is an error naming the process.

A pid is only ever signalled together with its start time (/proc/PID/stat), so a pid the kernel
reused for an unrelated process is left alone. Linux only; elsewhere nothing is found or swept.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Proc", "PortBusy", "become_subreaper", "recover_port", "start_watchdog", "stop_descendants"]

logger = logging.getLogger(__name__)

# SIGTERM first, so engines and HAProxy close their sockets; whatever is left after this, SIGKILL.
TERM_GRACE_S = 5.0
KILL_WAIT_S = 2.0
SNAPSHOT_INTERVAL_S = 1.0
REGISTRY_FILE = "processes.json"
_PROC = Path("/proc")
_PR_SET_CHILD_SUBREAPER = 36


class PortBusy(RuntimeError):
    """The gateway's port is taken by something a new start must not (or cannot) stop."""


@dataclass(frozen=True)
class Proc:
    """A process, told apart from a later one with the same pid by its start time."""

    pid: int
    start: int  # clock ticks since boot (/proc/PID/stat field 22)
    name: str = "?"

    @classmethod
    def read(cls, pid: int) -> Proc | None:
        """The process `pid` as it is now; None if it is gone or has exited (a zombie)."""
        try:
            stat = (_PROC / str(pid) / "stat").read_text()
        except OSError:
            return None
        # The name (field 2) may contain spaces and parentheses: split at its last ')'.
        head, rest = stat.rsplit(")", 1)
        fields = rest.split()
        if fields[0] in ("Z", "X"):
            return None
        return cls(pid, int(fields[19]), head.split("(", 1)[1])

    def alive(self) -> bool:
        now = Proc.read(self.pid)
        return now is not None and now.start == self.start

    def __str__(self) -> str:
        return f"{self.pid} ({self.name})"


def _parents() -> dict[int, int]:
    """{pid: parent pid} of every live process."""
    out = {}
    for entry in _PROC.glob("[0-9]*") if _PROC.is_dir() else ():
        try:
            rest = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if rest[0] not in ("Z", "X"):
            out[int(entry.name)] = int(rest[1])
    return out


def descendants(roots: Iterable[int], exclude: Iterable[int] = ()) -> list[Proc]:
    """Live descendants of the `roots` pids (not the roots themselves), minus `exclude` and theirs."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    skip = set(exclude)
    found: list[Proc] = []
    todo = [c for r in roots for c in children.get(r, [])]
    while todo:
        pid = todo.pop()
        if pid in skip:
            continue
        if (p := Proc.read(pid)) is not None:
            found.append(p)
        todo += children.get(pid, [])
    return found


def terminate(procs: Iterable[Proc], grace_s: float = TERM_GRACE_S) -> list[Proc]:
    """SIGTERM `procs`, wait up to `grace_s` for them to exit, SIGKILL the rest; returns who was signalled."""
    procs = [p for p in procs if p.pid != os.getpid() and p.alive()]
    for p in procs:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    left = procs
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if p.alive()]
    for p in left:
        _signal(p, signal.SIGKILL)
    # SIGKILL is delivered asynchronously: return once they are gone (or zombies), not before.
    deadline = time.monotonic() + KILL_WAIT_S
    while left and time.monotonic() < deadline:
        left = [p for p in left if p.alive()]
        time.sleep(0.05)
    return procs


def _signal(p: Proc, sig: signal.Signals) -> None:
    try:
        os.kill(p.pid, sig)
    except ProcessLookupError:
        pass


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux >= 3.4); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def stop_descendants(exclude: Iterable[int] = (), grace_s: float = TERM_GRACE_S) -> list[Proc]:
    """Stop every live descendant of this process except `exclude` (and theirs); returns them."""
    procs = descendants([os.getpid()], exclude)
    if procs:
        logger.info("stopping %d leftover process(es): %s", len(procs), ", ".join(map(str, procs)))
        terminate(procs, grace_s)
    return procs


# ---- the watchdog and its registry ---------------------------------------------------------------

@dataclass(frozen=True)
class Registry:
    """`<runtime dir>/processes.json`: a gateway's launcher and its processes, as last seen."""

    port: int
    launcher: Proc
    watchdog: Proc
    processes: list[Proc]

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)  # a reader never sees half a file

    @classmethod
    def read(cls, path: Path) -> Registry | None:
        try:
            raw = json.loads(path.read_text())
            return cls(raw["port"], Proc(**raw["launcher"]), Proc(**raw["watchdog"]),
                       [Proc(**p) for p in raw["processes"]])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def start_watchdog(port: int, runtime_dir: Path) -> subprocess.Popen[bytes] | None:
    """A process that outlives this one (the launcher), whatever ends it, then stops the gateway's processes."""
    me = Proc.read(os.getpid())
    if me is None or not hasattr(os, "pidfd_open"):
        return None
    runtime_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "serving.processes", "watch", str(port), str(me.pid), str(me.start),
         str(runtime_dir / REGISTRY_FILE)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # a signal to the launcher's process group must not reach it
    )


def _watch(port: int, launcher: Proc, registry_path: Path) -> int:
    me = Proc.read(os.getpid())
    assert me is not None
    try:
        fd = os.pidfd_open(launcher.pid)
    except ProcessLookupError:
        return 0
    seen: dict[int, Proc] = {}
    while launcher.alive():
        for p in descendants([launcher.pid], exclude=[me.pid]):
            seen[p.pid] = p
        seen = {pid: p for pid, p in seen.items() if p.alive()}
        Registry(port, launcher, me, list(seen.values())).write(registry_path)
        select.select([fd], [], [], SNAPSHOT_INTERVAL_S)  # readable once the launcher has exited
    os.close(fd)
    # The launcher is gone: what it left, and whatever those started since the last look.
    left = [p for p in seen.values() if p.alive()]
    terminate(left + descendants([p.pid for p in left]))
    registry_path.unlink(missing_ok=True)
    return 0


# ---- a new start on a port -----------------------------------------------------------------------

def recover_port(host: str, port: int, runtime_dir: Path) -> list[Proc]:
    """Make `port` usable for a new gateway, or raise PortBusy saying why it is not.

    The processes of an earlier gateway on this port whose launcher is gone are stale: reported and
    stopped. A live gateway on the port, or a program that is not a gateway, is left alone and named
    in the error. Returns the stale processes stopped.
    """
    path = runtime_dir / REGISTRY_FILE
    stopped: list[Proc] = []
    registry = Registry.read(path)
    if registry is not None and registry.launcher.pid != os.getpid():
        if registry.launcher.alive():
            raise PortBusy(f"another steergate gateway (launcher pid {registry.launcher.pid}) is serving on port "
                           f"{port}; stop it first, or start this one with --port")
        stale = [p for p in [registry.watchdog, *registry.processes] if p.alive()]
        if stale:
            logger.warning("found %d process(es) left by a gateway on port %d that did not stop cleanly (its "
                           "launcher, pid %d, is gone): %s; stopping them", len(stale), port,
                           registry.launcher.pid, ", ".join(map(str, stale)))
            stopped = terminate(stale + descendants([p.pid for p in stale]))
        path.unlink(missing_ok=True)
    if not _port_free(host, port):
        holder = _port_holder(port)
        who = f"pid {holder}" if holder is not None else "another program"
        raise PortBusy(f"port {port} on {host} is in use by {who} (not a steergate gateway it could recover); "
                       "stop it, or start the gateway with --port")
    return stopped


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from a stopped gateway is fine
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _port_holder(port: int) -> Proc | None:
    """The process listening on TCP `port`, if this user may see it."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{f[9]}]")
    for entry in _PROC.glob("[0-9]*") if inodes else ():
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    return Proc.read(int(entry.name))
            except OSError:
                continue
    return None


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "watch":
        port, pid, start, registry = sys.argv[2:]
        sys.exit(_watch(int(port), Proc(int(pid), int(start)), Path(registry)))
    sys.exit("usage: python -m serving.processes watch PORT LAUNCHER_PID LAUNCHER_START REGISTRY_FILE")
