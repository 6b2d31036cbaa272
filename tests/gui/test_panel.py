"""The panel in a real Qt window against a real daemon (JACK dummy server, OSC on a free
port): moving the temperature slider changes the running daemon's temperature, panic reaches
it, a daemon's change moves the panel, and a screenshot of the panel is written."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from PyQt6.QtCore import Qt

from ostinato.control_client import ControlClient
from ostinato.gui.panel import INSTRUMENTS, Panel
from tests.daemon.jack_rig import DAEMON_IN, REPO, JackServer, daemon_command
from tests.daemon.test_osc import free_udp_port

ARTIFACTS = Path(os.environ.get("OSTINATO_TEST_ARTIFACTS", REPO / "build" / "test-artifacts"))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gui")
    server = JackServer(f"ostinato-gui-{os.getpid()}")
    port = free_udp_port()
    (tmp / "config.toml").write_text("")
    log = (tmp / "daemon.log").open("w")
    proc = server.spawn(
        daemon_command("--osc-port", str(port), "--clock", "internal", "--mode", "jam",
                       "--programs", "drums,33", "--config", str(tmp / "config.toml")),
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    server.wait_for(lambda: DAEMON_IN in server.ports(), 60, "the daemon's ports never appeared")
    try:
        yield port, tmp / "daemon.log"
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    finally:
        log.close()
        server.close()  # whatever happened: no JACK server left behind


@pytest.fixture
def panel(qtbot, daemon, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # QSettings: not the user's own
    port, _ = daemon
    window = Panel("127.0.0.1", port)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()  # keyboard shortcuts act in the active window
    qtbot.waitActive(window)
    qtbot.waitUntil(lambda: window.connected and bool(window.state), timeout=20000)
    return window


def daemon_state(port: int) -> dict:
    client = ControlClient(port=port)
    try:
        return client.status()
    finally:
        client.close()


def test_slider_changes_the_running_daemons_temperature(qtbot, panel, daemon):
    port, _ = daemon
    slider = panel.temperature
    slider.setFocus()
    start = slider.value()
    qtbot.keyClick(slider, Qt.Key.Key_PageUp)  # one page: +0.10
    expected = (start + slider.pageStep()) / 100
    qtbot.waitUntil(
        lambda: daemon_state(port)["temperature"] == pytest.approx(expected), timeout=5000
    )
    assert panel.temperature_value.text() == f"{expected:.2f}"
    qtbot.keyClick(slider, Qt.Key.Key_BracketLeft)  # the shortcut: −0.05
    assert panel.temperature.value() == start + slider.pageStep() - 5
    qtbot.waitUntil(
        lambda: daemon_state(port)["temperature"] == pytest.approx(expected - 0.05), timeout=5000
    )


def test_panic_button_reaches_the_daemon(qtbot, panel, daemon):
    _, log_path = daemon
    before = log_path.read_text().count("panic: every note released")
    qtbot.mouseClick(panel.panic_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: log_path.read_text().count("panic: every note released") == before + 1,
        timeout=5000,
    )
    qtbot.keyClick(panel.temperature, Qt.Key.Key_Escape)  # the shortcut
    qtbot.waitUntil(
        lambda: log_path.read_text().count("panic: every note released") == before + 2,
        timeout=5000,
    )


def test_controls_follow_the_daemon_and_send_their_changes(qtbot, panel, daemon):
    port, _ = daemon
    client = ControlClient(port=port)
    try:
        client.set("top_k", 17)  # another client: the panel follows
        qtbot.waitUntil(lambda: panel.top_k.value() == 17, timeout=5000)
        panel.mode.setCurrentText("loop")
        qtbot.waitUntil(lambda: client.status()["mode"] == "loop", timeout=5000)
        panel.mode.setCurrentText("jam")
        bass = dict(INSTRUMENTS)["Bass"]
        panel.instrument_boxes[-1].setChecked(False)
        qtbot.waitUntil(lambda: client.status()["programs"] == str(bass), timeout=5000)
        panel.follow.setChecked(True)
        qtbot.waitUntil(lambda: client.status()["programs"] == "auto", timeout=5000)
        assert not panel.instrument_boxes[bass].isEnabled()
        panel.follow.setChecked(False)
        panel.instrument_boxes[-1].setChecked(True)
        panel.instrument_boxes[bass].setChecked(True)
        qtbot.waitUntil(lambda: client.status()["programs"] == "drums,33", timeout=5000)
    finally:
        client.close()


def test_screenshot_of_the_running_panel(qtbot, panel):
    # the daemon plays (jam mode, internal clock): wait until the roll has its notes
    qtbot.waitUntil(lambda: len(panel.roll.notes) > 8, timeout=30000)
    qtbot.waitUntil(lambda: panel.position.text() not in ("–", "stopped"), timeout=5000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "panel.png"
    image = panel.grab()
    assert image.save(str(path))
    assert path.stat().st_size > 10_000
    assert image.width() >= 500 and image.height() >= 600
