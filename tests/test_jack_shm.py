"""Clearing what killed JACK servers leave in JACK's registry (ostinato/jack_shm.py): on a
registry made here, then the real thing: servers killed one after another until JACK refuses
a new one, and after that the test rig's server and an in-process client all the same."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import jack

from ostinato import jack_shm
from tests.daemon.jack_rig import JackServer, Probe, require

STRIDE = 264  # a server entry: pid_t, char[257], padded


def fake_proc(root: Path, states: dict[int, str]) -> Path:
    for pid, state in states.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "stat").write_text(f"{pid} (jackd) {state} 1 {pid} {pid} 0 -1")
    return root


def fake_registry(shm: Path, entries: dict[int, tuple[int, str]]) -> Path:
    header_len = jack_shm.HEADER.size + jack_shm.MAX_SERVERS * STRIDE
    size = header_len + 256 * 268
    data = bytearray(size)
    jack_shm.HEADER.pack_into(data, 0, jack_shm.MAGIC, 0, 1, size, header_len, 268)
    for slot, (pid, name) in entries.items():
        offset = jack_shm.HEADER.size + slot * STRIDE
        jack_shm.PID.pack_into(data, offset, pid)
        data[offset + 4 : offset + 4 + len(name)] = name.encode()
    path = shm / jack_shm.REGISTRY
    path.write_bytes(bytes(data))
    return path


def test_only_the_entries_and_files_of_gone_servers_are_cleared(tmp_path) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    proc = fake_proc(tmp_path / "proc", {100: "S", 101: "Z"})  # 101: a zombie; 102: gone
    uid = os.getuid()
    live, zombie, gone = (f"jack-{uid}:{name}:" for name in ("live", "zombie", "gone"))
    registry = fake_registry(shm, {0: (100, live), 3: (101, zombie), 7: (102, gone)})
    files = [f"jack_gone_{uid}_0", f"jack_sem.{uid}_gone_system", f"jack_live_{uid}_0",
             f"jack_sem.{uid}_live_system", f"jack-{uid}-0", "sem.mp-abc"]  # fmt: skip
    for name in files:
        (shm / name).write_text("x")
    before = registry.read_bytes()
    assert sorted(jack_shm.clear_stale(shm, proc)) == [gone, zombie]
    assert jack_shm.servers(shm) == [jack_shm.Server(0, 100, live)]
    after = registry.read_bytes()
    assert len(after) == len(before) and after[:200] == before[:200]  # header, live entry
    kept = [jack_shm.REGISTRY, f"jack_live_{uid}_0", f"jack_sem.{uid}_live_system",
            f"jack-{uid}-0", "sem.mp-abc"]  # fmt: skip
    assert sorted(p.name for p in shm.iterdir()) == sorted(kept)
    assert jack_shm.clear_stale(shm, proc) == []  # nothing more to clear


def test_no_registry_or_a_foreign_one_is_left_alone(tmp_path) -> None:
    assert jack_shm.clear_stale(tmp_path, tmp_path) == []
    (tmp_path / jack_shm.REGISTRY).write_bytes(b"not JACK's" * 100)
    assert jack_shm.clear_stale(tmp_path, tmp_path) == []
    assert (tmp_path / jack_shm.REGISTRY).read_bytes() == b"not JACK's" * 100


def start_raw_server(name: str) -> tuple[subprocess.Popen, bool, str]:
    """jackd as a killed run started it, without the rig's clearing: (process, started,
    what it said when it did not)."""
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_AUDIO_RESERVATION="1")
    proc = subprocess.Popen(
        ["jackd", "--no-realtime", "-n", name, "-d", "dummy", "-r", "48000", "-p", "256"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
        start_new_session=True,
    )  # fmt: skip
    end = time.monotonic() + 10
    while time.monotonic() < end and proc.poll() is None:
        if subprocess.run(["jack_lsp"], env=env, capture_output=True).returncode == 0:
            return proc, True, ""
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    return proc, False, proc.communicate(timeout=10)[0]


def test_servers_killed_by_a_run_do_not_stop_the_next_runs_server() -> None:
    require("jackd", "jack_lsp")
    # servers of other programs keep their slots: the killed ones fill the rest, briefly
    first = JackServer(f"ostinato-before-killed-{os.getpid()}")
    try:  # this process has used JACK: it keeps the registry mapped from here on
        Probe("before").close()
    finally:
        first.close()
    refused = ""
    for i in range(3 * jack_shm.MAX_SERVERS):
        proc, started, said = start_raw_server(f"ostinato-killed-{os.getpid()}-{i}")
        if not started:
            refused = said
            break
        proc.kill()  # SIGKILL: no clean exit, its entry stays
        proc.wait()
    assert "Too many servers" in refused, refused  # what killed runs leave blocks JACK
    server = JackServer(f"ostinato-after-killed-{os.getpid()}")
    try:
        assert server.run("jack_lsp").returncode == 0
        probe = Probe("after")  # a client of this process finds the new server too
        assert isinstance(probe.client, jack.Client) and probe.client.status.server_started is False
        probe.close()
    finally:
        server.close()
    assert not [s for s in jack_shm.servers() if "ostinato-killed-" in s.name]
    assert not list(Path(jack_shm.SHM_DIR).glob(f"jack_*ostinato-killed-{os.getpid()}-*"))
