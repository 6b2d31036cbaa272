"""What JACK servers that were killed leave in /dev/shm, and clearing it.

A JACK server registers itself in ``/dev/shm/jack-shm-registry``, a table of at most eight
servers (pid, name) shared by every JACK process on the machine. A server killed without its
clean exit (SIGKILL, a test run stopped half-way) stays in it, and JACK reclaims the entry
only when a server of the same name starts again; servers named per run (the test rig's,
``ostinato bench --realtime``'s) never are, so after a few killed runs every new server fails
with "Too many servers already active". :func:`clear_stale` empties, in place, the entries of
servers whose process is gone, as JACK itself would, and removes their files beside it. The
entries of running servers are never touched, and the registry is never removed: every
process that has used JACK keeps it mapped, and one made anew would be a registry those
processes cannot see (their next client would fail to open).

Linux only (POSIX shared memory in /dev/shm, processes in /proc); elsewhere it finds nothing
to clear. Called from the main thread of a test or the benchmark before they start a server,
never from the daemon.
"""

from __future__ import annotations

import glob
import logging
import mmap
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
PROC_DIR = Path("/proc")
REGISTRY = "jack-shm-registry"
MAGIC = 0x4A41434B  # "JACK"
MAX_SERVERS = 8
# jack_shm_header_t (JACK's shm.h): magic, protocol, shm type, registry size, header length,
# entry length; then MAX_SERVERS × {pid_t pid; char name[257]}, each padded to the header
# length's share
HEADER = struct.Struct("<IHxxiiii")
PID = struct.Struct("<i")
PREFIX = re.compile(r"jack-(\d+):(.*):")  # how JACK names a server in the table: its user, its name


@dataclass(frozen=True)
class Server:
    """One entry of the registry's server table: ``name`` as JACK writes it there,
    ``jack-<uid>:<server name>:``."""

    slot: int
    pid: int
    name: str


def alive(pid: int, proc_dir: Path = PROC_DIR) -> bool:
    """Whether process ``pid`` runs (a zombie, killed and not yet waited for, does not)."""
    if not proc_dir.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's
            return True
        return True
    try:
        stat = (proc_dir / str(pid) / "stat").read_text()
    except OSError:
        return False
    state = stat[stat.rfind(")") + 2 :].split(" ", 1)[0]  # "pid (name) state …"
    return state not in ("Z", "X")


def _layout(registry: bytes | mmap.mmap) -> int | None:
    """The size of one server entry, or None when this is no registry JACK wrote."""
    if len(registry) < HEADER.size:
        return None
    magic, _, _, size, header_len, _ = HEADER.unpack_from(registry, 0)
    stride = (header_len - HEADER.size) // MAX_SERVERS
    if magic != MAGIC or stride < PID.size + 1 or header_len > min(size, len(registry)):
        return None
    return stride


def servers(shm_dir: Path = SHM_DIR) -> list[Server]:
    """The servers registered on this machine, running or gone."""
    try:
        registry = (shm_dir / REGISTRY).read_bytes()
    except OSError:
        return []
    stride = _layout(registry)
    if stride is None:
        return []
    found = []
    for slot in range(MAX_SERVERS):
        offset = HEADER.size + slot * stride
        (pid,) = PID.unpack_from(registry, offset)
        name = registry[offset + PID.size : offset + stride].split(b"\0", 1)[0]
        if pid:
            found.append(Server(slot, pid, name.decode("utf-8", "replace")))
    return found


def clear_stale(shm_dir: Path = SHM_DIR, proc_dir: Path = PROC_DIR) -> list[str]:
    """Empty the registry entries of servers whose process is gone and remove their files;
    the entries cleared, as :attr:`Server.name` gives them. Running servers' entries, and the
    registry itself, stay."""
    path = shm_dir / REGISTRY
    try:
        handle = path.open("r+b")
    except OSError:  # no registry (no server ever ran), or another user's
        return []
    with handle:
        try:
            registry = mmap.mmap(handle.fileno(), 0)
        except (OSError, ValueError):  # empty, or not a file that maps
            return []
        with registry:
            cleared = _clear_gone(registry, proc_dir)
    running = {s.name for s in servers(shm_dir)}
    for name in cleared:
        if name and name not in running:
            _remove_files(shm_dir, name)
    if cleared:
        log.info("cleared %d JACK servers that were killed from the registry: %s",
                 len(cleared), ", ".join(cleared))  # fmt: skip
    return cleared


def _clear_gone(registry: mmap.mmap, proc_dir: Path) -> list[str]:
    """Empty, in the mapped registry, the entries whose process is gone; their names."""
    cleared: list[str] = []
    stride = _layout(registry)
    if stride is None:
        return []
    for slot in range(MAX_SERVERS):
        offset = HEADER.size + slot * stride
        (pid,) = PID.unpack_from(registry, offset)
        if pid == 0 or alive(pid, proc_dir):
            continue
        name = registry[offset + PID.size : offset + stride].split(b"\0", 1)[0]
        registry[offset : offset + stride] = bytes(stride)  # as JACK reclaims an entry
        cleared.append(name.decode("utf-8", "replace"))
    return cleared


def _remove_files(shm_dir: Path, entry: str) -> None:
    """A gone server's segments and semaphores (``jack_<name>_<uid>_…``,
    ``jack_sem.<uid>_<name>_…``) that belong to this user."""
    uid = os.getuid()
    match = PREFIX.fullmatch(entry)
    if match is None or int(match[1]) != uid or not match[2]:
        return
    escaped = glob.escape(match[2])
    for pattern in (f"jack_{escaped}_{uid}_*", f"jack_sem.{uid}_{escaped}_*"):
        for path in shm_dir.glob(pattern):
            try:
                if path.lstat().st_uid == uid:
                    path.unlink()
            except OSError:
                continue
