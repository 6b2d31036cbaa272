"""The JACK server goes away under a playing daemon: it must never be left unkillable.

The JACK sender's shutdown callback hears the server go; the sender says why and exits
(status 1), and the daemon, its sender gone, exits with status 1 for a service manager to
restart it. (A sender wedged anyway is ended by its watchdog, with the same result.)"""

from __future__ import annotations

import os
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
        code = daemon.wait(60)  # raises if it is deaf to its sender's end
        text = log_path.read_text()
        assert code == 1, text[-3000:]
        assert "the JACK server shut down" in text, text[-3000:]
        assert "exiting: without its note sender the daemon cannot play" in text
        assert time.monotonic() - stopped < 130
    finally:
        server.close()
