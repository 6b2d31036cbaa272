"""The JACK server goes away under a playing daemon: it must never be left unkillable.

python-rtmidi's JACK output spins on its full buffer, holding the GIL, once nobody drains it;
the note sender's watchdog then exits it (status 1, tracebacks on stderr), and the daemon,
its sender gone, exits with status 1 for a service manager to restart. If the buffer has not
filled yet, SIGTERM still stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.daemon.jack_rig import DAEMON_IN, REPO, JackServer, daemon_command


def test_daemon_never_hangs_when_the_jack_server_stops(tmp_path):
    server = JackServer(f"ostinato-loss-{os.getpid()}")
    log_path = tmp_path / "daemon.log"
    try:
        with log_path.open("w") as log:
            # many notes a second, so the output buffer fills soon after JACK is gone
            daemon = server.spawn(
                daemon_command("--clock", "internal", "--bpm", "300", "--mode", "jam",
                               "--programs", "drums,33,4,89,80", "--no-osc"),
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        server.wait_for(lambda: DAEMON_IN in server.ports(), 60, "the daemon never started")
        time.sleep(3)  # playing
        server.proc.terminate()
        server.proc.wait(10)
        stopped = time.monotonic()
        try:
            code = daemon.wait(90)
        except subprocess.TimeoutExpired:  # the buffer has not filled yet: still playing
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(30)  # raises if it is deaf to signals and to its watchdog
        text = log_path.read_text()
        if code == 0:
            assert "stopped:" in text  # a clean shutdown
        else:  # the watchdog: wedged in the MIDI backend while playing or shutting down
            assert code == 1 and "Timeout (0:00:" in text, text[-3000:]
            assert "in send" in text  # the traceback names where it was stuck
        assert time.monotonic() - stopped < 130
    finally:
        server.close()
