"""The panel in a real Qt window against a real daemon (JACK dummy server, OSC on a free
port): moving the temperature slider changes the running daemon's temperature, panic reaches
it and is shown done only when acknowledged (retried against a daemon that does not answer),
a daemon's change moves the panel, the take buttons and their keys (Regenerate R, Keep K,
Undo U, Shift+K release) act on the daemon and show its answers and the kept places, and
the screenshot shows the temperature and the notes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from PyQt6.QtCore import QPoint, QRect, Qt
from PyQt6.QtWidgets import QWidget
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from ostinato.control_client import ControlClient
from ostinato.gui.panel import (
    GENERATED_COLOUR,
    HUMAN_COLOUR,
    INSTRUMENTS,
    PANIC_TRIES,
    Panel,
    clock_name,
    kept_text,
    loop_status,
)
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


def show_tab(panel: Panel, widget: QWidget) -> None:
    """Open the tab of the rarer knobs that holds ``widget``, as a musician would."""
    for index in range(panel.more.count()):
        if panel.more.widget(index).isAncestorOf(widget):
            panel.more.setCurrentIndex(index)
            return
    raise AssertionError(f"{widget} is in no tab")


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
    assert panel.panic_status == "sent"
    qtbot.waitUntil(lambda: panel.panic_status == "done", timeout=5000)
    assert panel.statusBar().currentMessage() == "panic done: every note released"
    first = log_path.read_text().count("panic: every note released")
    assert first >= before + 1
    qtbot.keyClick(panel.temperature, Qt.Key.Key_Escape)  # the shortcut
    assert panel.panic_status == "sent"
    qtbot.waitUntil(lambda: panel.panic_status == "done", timeout=5000)
    assert log_path.read_text().count("panic: every note released") >= first + 1


class SilentDaemon:
    """A UDP socket where a daemon would be: counts the panics it gets and acknowledges
    only the ``answer_on``-th one (never, with 0)."""

    def __init__(self, answer_on: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.answer_on = answer_on
        self.panics = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            if OscMessage(data).address != "/ostinato/panic":
                continue
            self.panics += 1
            if self.panics == self.answer_on:
                ok = OscMessageBuilder("/ostinato/ok")
                ok.add_arg("/ostinato/panic")
                self.sock.sendto(ok.build().dgram, sender)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.sock.close()


@pytest.mark.parametrize("answer_on", [0, 3])
def test_panic_is_retried_until_acknowledged(qtbot, tmp_path, monkeypatch, answer_on):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    silent = SilentDaemon(answer_on)
    window = Panel("127.0.0.1", silent.port)
    qtbot.addWidget(window)
    try:
        window.panic()
        if answer_on:
            qtbot.waitUntil(lambda: window.panic_status == "done", timeout=5000)
            qtbot.wait(600)  # no more tries after the acknowledgement
            assert silent.panics == answer_on == window.panic_tries
        else:
            qtbot.waitUntil(lambda: window.panic_status == "failed", timeout=5000)
            assert silent.panics == PANIC_TRIES == window.panic_tries
            assert "panic NOT acknowledged" in window.statusBar().currentMessage()
    finally:
        window.close()
        silent.close()


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


def test_channel_maps_and_program_change_reach_the_daemon(qtbot, panel, daemon):
    port, _ = daemon
    client = ControlClient(port=port)
    try:
        qtbot.waitUntil(lambda: "bass=2" in panel.out_channels.text(), timeout=5000)
        show_tab(panel, panel.out_channels)
        panel.out_channels.setFocus()
        panel.out_channels.selectAll()
        qtbot.keyClicks(panel.out_channels, "bass=5, 81=12")
        qtbot.keyClick(panel.out_channels, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: "bass=5" in client.status()["out_channels"], timeout=5000)
        assert "81=12" in client.status()["out_channels"]
        assert "drums=10" in client.status()["out_channels"]  # the rest as it was
        panel.in_channels.setFocus()
        panel.in_channels.selectAll()
        qtbot.keyClicks(panel.in_channels, "3=lead")
        qtbot.keyClick(panel.in_channels, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: "3=lead" in client.status()["in_channels"], timeout=5000)
        panel.out_channels.setFocus()
        panel.out_channels.selectAll()
        qtbot.keyClicks(panel.out_channels, "bass=17")  # refused: nothing changes
        qtbot.keyClick(panel.out_channels, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: panel.last_error.startswith("/ostinato/out_channels"),
                        timeout=5000)  # fmt: skip
        assert "bass=5" in client.status()["out_channels"]
        show_tab(panel, panel.program_change)
        box = QPoint(8, panel.program_change.height() // 2)
        qtbot.mouseClick(panel.program_change, Qt.MouseButton.LeftButton, pos=box)
        qtbot.waitUntil(lambda: client.status()["program_change"] == 1, timeout=5000)
    finally:
        client.close()


def test_variation_loop_bars_fill_and_bars_auto_reach_the_daemon(qtbot, panel, daemon):
    port, _ = daemon
    client = ControlClient(port=port)
    try:
        assert panel.variation_value.text() == "0.30"  # the daemon's default, shown
        slider = panel.variation
        slider.setFocus()
        qtbot.keyClick(slider, Qt.Key.Key_PageUp)  # one page: +0.10
        qtbot.waitUntil(lambda: client.status()["variation"] == pytest.approx(0.4), timeout=5000)
        assert panel.variation_value.text() == "0.40"
        assert panel.loop_bars.text() == "auto"
        show_tab(panel, panel.loop_bars)
        panel.loop_bars.setFocus()
        qtbot.keyClick(panel.loop_bars, Qt.Key.Key_Up)  # auto → 1
        qtbot.waitUntil(lambda: client.status()["loop_bars"] == 1, timeout=5000)
        panel.loop_bars.setValue(8)
        qtbot.waitUntil(lambda: client.status()["loop_bars"] == 8, timeout=5000)
        qtbot.keyClick(panel.loop_bars, Qt.Key.Key_Down)
        qtbot.waitUntil(lambda: client.status()["loop_bars"] == 7, timeout=5000)
        panel.loop_bars.setValue(0)  # the special value
        assert panel.loop_bars.text() == "auto"
        qtbot.waitUntil(lambda: client.status()["loop_bars"] == "auto", timeout=5000)
        box = QPoint(8, panel.fill.height() // 2)  # on the box (the widget is wider)
        qtbot.mouseClick(panel.fill, Qt.MouseButton.LeftButton, pos=box)
        assert panel.fill.isChecked()
        qtbot.waitUntil(lambda: client.status()["fill"] == 1, timeout=5000)
        panel.bars.setValue(0)
        assert panel.bars.text() == "auto"
        qtbot.waitUntil(lambda: client.status()["bars"] == "auto", timeout=5000)
        panel.bars.setValue(6)
        qtbot.waitUntil(lambda: client.status()["bars"] == 6, timeout=5000)

        # another client's changes move the panel (and are not sent back)
        client.set("variation", 0.85)
        client.set("loop_bars", 12)
        client.set("fill", 0)
        client.set("bars", "auto")
        qtbot.waitUntil(lambda: panel.variation_value.text() == "0.85", timeout=5000)
        qtbot.waitUntil(lambda: panel.loop_bars.value() == 12, timeout=5000)
        qtbot.waitUntil(lambda: not panel.fill.isChecked(), timeout=5000)
        qtbot.waitUntil(lambda: panel.bars.text() == "auto", timeout=5000)
        assert panel.variation.value() == 85
        client.set("loop_bars", "auto")
        qtbot.waitUntil(lambda: panel.loop_bars.text() == "auto", timeout=5000)
        state = client.status()
        assert (state["variation"], state["loop_bars"], state["fill"], state["bars"]) == (
            pytest.approx(0.85),
            "auto",
            0,
            "auto",
        )
        assert panel.last_error == ""  # nothing the panel sent was refused
    finally:
        for name, value in (("variation", 0.3), ("loop_bars", "auto"), ("fill", 0),
                            ("bars", 4)):  # fmt: skip
            client.set(name, value)
        client.close()


class StateDaemon:
    """A UDP socket where a daemon would be: answers each subscribe with ``state`` (as a
    daemon's ``/ostinato/state``), and records the settings the panel sends."""

    def __init__(self, state: dict) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.state = state
        self.received: list[tuple[str, list]] = []
        self.panel: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def push(self, **changes) -> None:
        self.state = self.state | changes
        if self.panel is not None:
            self._send_state(self.panel)

    def _send_state(self, to: tuple[str, int]) -> None:
        message = OscMessageBuilder("/ostinato/state")
        for key, value in self.state.items():
            message.add_arg(key)
            message.add_arg(value)
        self.sock.sendto(message.build().dgram, to)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            message = OscMessage(data)
            self.received.append((message.address, list(message.params)))
            if message.address == "/ostinato/subscribe":
                self.panel = sender
                self._send_state(sender)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.sock.close()


STATE = {
    "temperature": 0.8, "top_k": 0, "top_p": 0.95, "repetition_penalty": 1.0, "mode": "loop",
    "bars": "auto", "phrase_bars": 2, "programs": "auto", "seed": "none", "key_lock": 1,
    "variation": 0.25, "fill": 1, "loop_bars": "auto", "loop_length": 4, "loop_first_bar": 8,
    "loop_from": "daw", "fallbacks": 0, "clock": "midi", "beats_per_bar": 4.0,
}  # fmt: skip


def test_status_line_shows_the_loop_and_the_fallbacks(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    fake = StateDaemon(STATE)
    window = Panel("127.0.0.1", fake.port)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    try:
        qtbot.waitUntil(lambda: bool(window.state), timeout=5000)
        assert window.loop_status.text() == "loop 4 bars (DAW)"
        assert window.loop_status.isVisible()
        assert window.variation_value.text() == "0.25" and window.variation.value() == 25
        assert window.fill.isChecked()
        assert window.bars.text() == "auto" and window.loop_bars.text() == "auto"
        fake.push(fallbacks=3)
        qtbot.waitUntil(lambda: "fallbacks 3" in window.loop_status.text(), timeout=5000)
        assert window.loop_status.text() == "loop 4 bars (DAW) · fallbacks 3"
        window.status.showMessage("refused something", 5000)  # a passing message …
        assert window.loop_status.isVisible()  # … leaves the loop in view
        fake.push(loop_length=8, loop_from="set", loop_bars=8)
        qtbot.waitUntil(lambda: window.loop_status.text().startswith("loop 8 bars (set)"),
                        timeout=5000)  # fmt: skip
        assert window.loop_bars.value() == 8
        fake.push(loop_length=0, loop_from="", fallbacks=0)
        qtbot.waitUntil(lambda: window.loop_status.text() == "", timeout=5000)
        # the state moved the controls: nothing was sent back to the daemon
        sent = {address for address, _ in fake.received}
        assert sent <= {"/ostinato/subscribe", "/ostinato/roll", "/ostinato/unsubscribe"}, sent
    finally:
        window.close()
        fake.close()


def test_take_buttons_and_keys_act_on_the_running_daemon(qtbot, panel, daemon):
    port, log_path = daemon
    client = ControlClient(port=port)
    try:
        client.set("loop_bars", 2)
        assert panel.kept_label.text() == "nothing kept"
        keep = panel.take_buttons["keep"]

        clicked = [0.0]

        def kept() -> bool:  # Keep, until a bar the daemon plays is at a known loop place
            if panel.last_take.startswith("keep: "):
                return True
            if time.monotonic() - clicked[0] > 0.5:  # one at a time: the answer comes first
                clicked[0] = time.monotonic()
                qtbot.mouseClick(keep, Qt.MouseButton.LeftButton)
            return False

        qtbot.waitUntil(kept, timeout=30000)
        assert "is kept at loop place" in panel.last_take
        qtbot.waitUntil(lambda: panel.kept_label.text().startswith("kept: loop place "),
                        timeout=5000)  # fmt: skip
        place = client.status()["kept"]
        assert panel.kept_label.text() == f"kept: loop place {place}"
        assert f"kept {place}" in panel.loop_status.text()
        qtbot.keyClick(panel.temperature, Qt.Key.Key_R)  # the shortcuts, wherever the focus
        qtbot.waitUntil(lambda: panel.last_take.startswith("regenerate: bar "), timeout=5000)
        qtbot.keyClick(panel.temperature, Qt.Key.Key_U)
        qtbot.waitUntil(lambda: panel.last_take.startswith("undo: undo regenerate bar "),
                        timeout=5000)  # fmt: skip
        qtbot.keyClick(panel.temperature, Qt.Key.Key_U)
        qtbot.waitUntil(lambda: panel.last_take == f"undo: undo keep loop place {place}: "
                        "released", timeout=5000)  # fmt: skip
        qtbot.waitUntil(lambda: panel.kept_label.text() == "nothing kept", timeout=5000)
        qtbot.keyClick(panel.temperature, Qt.Key.Key_K, Qt.KeyboardModifier.ShiftModifier)
        qtbot.waitUntil(lambda: panel.last_error == "/ostinato/keep: nothing is kept",
                        timeout=5000)  # fmt: skip
        qtbot.mouseClick(panel.take_buttons["undo"], Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: panel.last_error == "/ostinato/undo: nothing to undo",
                        timeout=5000)  # fmt: skip
        assert "refused /ostinato/undo: nothing to undo" in panel.statusBar().currentMessage()
        assert client.status()["takes"] >= 4
        assert "take: undo keep loop place" in log_path.read_text()
    finally:
        client.set("loop_bars", "auto")
        client.close()


def test_take_buttons_send_their_address_and_the_kept_places_show(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    fake = StateDaemon(STATE | {"kept": "1,3", "takes": 2, "last_take": "keep loop place 3"})
    window = Panel("127.0.0.1", fake.port)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    try:
        qtbot.waitUntil(lambda: bool(window.state), timeout=5000)
        assert window.kept_label.text() == "kept: loop places 1, 3"
        assert window.loop_status.text() == "loop 4 bars (DAW) · kept 1,3"
        for action in ("regenerate", "keep", "undo"):
            qtbot.mouseClick(window.take_buttons[action], Qt.MouseButton.LeftButton)
        window.take("keep", 0)  # what Shift+K sends
        qtbot.waitUntil(lambda: len([a for a, _ in fake.received if a != "/ostinato/roll"]) >= 5,
                        timeout=5000)  # fmt: skip
        sent = [(a, args) for a, args in fake.received
                if a not in ("/ostinato/subscribe", "/ostinato/roll")]  # fmt: skip
        assert sent == [("/ostinato/regenerate", []), ("/ostinato/keep", []),
                        ("/ostinato/undo", []), ("/ostinato/keep", [0])]  # fmt: skip
        fake.push(kept="")
        qtbot.waitUntil(lambda: window.kept_label.text() == "nothing kept", timeout=5000)
        assert window.loop_status.text() == "loop 4 bars (DAW)"
    finally:
        window.close()
        fake.close()


def test_kept_words():
    assert kept_text({}) == "nothing kept"
    assert kept_text({"kept": "2"}) == "kept: loop place 2"
    assert kept_text({"kept": "1,3,answer"}) == "kept: loop places 1, 3 and the answer"
    assert kept_text({"kept": "answer"}) == "kept: the answer"


def test_loop_status_words():
    assert loop_status({}) == ""
    assert loop_status({"loop_length": 1, "loop_from": "repetition"}) == "loop 1 bar (repetition)"
    assert loop_status({"loop_length": 2, "loop_from": "set"}) == "loop 2 bars (set)"
    assert loop_status({"loop_length": 0, "fallbacks": 2}) == "fallbacks 2"


def test_clock_words():
    assert clock_name({"clock": "midi", "link_peers": 0}) == "midi"
    assert clock_name({"clock": "link", "link_peers": 1}) == "Link, 1 peer"
    assert clock_name({"clock": "link", "link_peers": 0}) == "Link, 0 peers"
    assert clock_name({"clock": "link", "link_peers": 3}) == "Link, 3 peers"


def test_screenshot_shows_the_temperature_and_the_notes(qtbot, panel, daemon):
    port, _ = daemon
    # the daemon plays (jam mode, internal clock): wait until the roll has its notes
    qtbot.waitUntil(lambda: len(panel.roll.notes) > 8, timeout=30000)
    qtbot.waitUntil(lambda: panel.position.text() not in ("–", "stopped"), timeout=5000)
    client = ControlClient(port=port)
    try:
        client.set("temperature", 1.37)
        qtbot.waitUntil(lambda: panel.temperature_value.text() == "1.37", timeout=5000)
        assert panel.temperature.value() == 137
    finally:
        client.close()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    image = panel.grab()
    assert image.save(str(ARTIFACTS / "panel.png"))
    assert image.width() >= 500 and image.height() >= 600
    # the roll, drawn as the screenshot draws it: each note in its colour where it belongs
    rects = panel.roll.note_rects()
    roll = panel.roll.grab().toImage()
    scale = roll.devicePixelRatio()
    colours = {True: GENERATED_COLOUR.rgb(), False: HUMAN_COLOUR.rgb()}
    inside = [(r, g) for r, g in rects if r.left() >= 0 and r.right() < panel.roll.width()]
    assert len(inside) >= 4, rects
    for rect, generated in inside:
        centre = rect.center()
        pixel = roll.pixel(int(centre.x() * scale), int(centre.y() * scale))
        assert pixel == colours[generated], (rect, hex(pixel))
    orange = sum(
        roll.pixel(x, y) == GENERATED_COLOUR.rgb()
        for x in range(0, roll.width(), 2)
        for y in range(0, roll.height(), 2)
    )
    assert orange > 20  # jam mode on drums and bass: Ostinato's notes, in orange


def test_the_panel_fits_a_laptop_screen_with_the_roll_in_view(qtbot, panel, daemon):
    """A 1280 × 720 screen (a 1366 × 768 or 1280 × 800 laptop, less its bars): the panel
    opens within it and resizes down to it, and the piano roll, what a musician watches,
    lies inside the window, big enough to read, the main controls beside it; the rarer
    knobs wait in tabs. The screenshot is the README's (docs/panel-1280x720.png)."""
    assert panel.width() <= 1280 and panel.height() <= 720  # as it opens, nothing saved
    least = panel.minimumSizeHint()
    assert least.width() <= 1280 and least.height() <= 720
    panel.resize(1280, 720)
    qtbot.waitUntil(lambda: (panel.width(), panel.height()) == (1280, 720), timeout=5000)
    qtbot.waitUntil(lambda: len(panel.roll.notes) > 40, timeout=60000)  # bars of them
    roll = QRect(panel.roll.mapTo(panel, QPoint(0, 0)), panel.roll.size())
    assert QRect(0, 0, 1280, 720).contains(roll), roll
    assert roll.width() >= 640 and roll.height() >= 360, roll
    screen = panel.screen().availableGeometry()
    assert screen.contains(QRect(panel.roll.mapToGlobal(QPoint(0, 0)), panel.roll.size()))
    for widget in (panel.roll, panel.temperature, panel.variation, panel.mode,
                   panel.panic_button, *panel.take_buttons.values(), panel.more):  # fmt: skip
        spot = QRect(widget.mapTo(panel, QPoint(0, 0)), widget.size())
        assert widget.isVisible() and QRect(0, 0, 1280, 720).contains(spot), widget
    assert panel.more.count() >= 3  # the rarer knobs, a tab each kind
    assert not panel.out_channels.isVisible()  # … out of the way until asked for
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    image = panel.grab()
    assert (image.width(), image.height()) == (1280, 720)
    assert image.save(str(ARTIFACTS / "panel-1280x720.png"))


def test_the_style_menu_follows_the_daemon_and_sends_its_choice(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    fake = StateDaemon(STATE | {"style": "lofi", "guidance": 1.5, "style_tokens": 1})
    window = Panel("127.0.0.1", fake.port)
    qtbot.addWidget(window)
    try:
        qtbot.waitUntil(lambda: bool(window.state), timeout=5000)
        assert window.style_menu.currentText() == "lofi" and window.style_menu.isEnabled()
        assert window.guidance.value() == 1.5
        items = [window.style_menu.itemText(i) for i in range(window.style_menu.count())]
        assert items[0] == "auto" and "dnb" in items and "quartet" in items
        window.style_menu.setCurrentText("house")
        qtbot.waitUntil(lambda: ("/ostinato/style", ["house"]) in fake.received, timeout=5000)
        fake.push(style="auto", style_tokens=0)  # a model without style tokens
        qtbot.waitUntil(lambda: not window.style_menu.isEnabled(), timeout=5000)
        assert window.style_menu.currentText() == "auto" and not window.guidance.isEnabled()
    finally:
        window.close()
        fake.close()


def test_the_density_box_follows_the_daemon_and_sends_what_is_set(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    fake = StateDaemon(STATE | {"density": 2.0})
    window = Panel("127.0.0.1", fake.port)
    qtbot.addWidget(window)
    try:
        qtbot.waitUntil(lambda: bool(window.state), timeout=5000)
        assert window.density.value() == 2.0
        window.density.setValue(0.0)  # no limit
        qtbot.waitUntil(lambda: ("/ostinato/density", [0.0]) in fake.received, timeout=5000)
        assert window.density.text() == "no limit"
        fake.push(density=1.5)
        qtbot.waitUntil(lambda: window.density.value() == 1.5, timeout=5000)
    finally:
        window.close()
        fake.close()


def test_the_commit_menu_follows_the_daemon_and_sends_what_is_chosen(qtbot, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    fake = StateDaemon(STATE | {"commit": 2.0})
    window = Panel("127.0.0.1", fake.port)
    qtbot.addWidget(window)

    def items() -> list[str]:
        return [window.commit.itemText(i) for i in range(window.commit.count())]

    try:
        qtbot.waitUntil(lambda: bool(window.state), timeout=5000)
        assert window.commit.currentText() == "2 beats"
        assert items() == ["bar", "0.5 beat", "1 beat", "2 beats"]
        window.commit.setCurrentText("1 beat")
        qtbot.waitUntil(lambda: ("/ostinato/commit", [1.0]) in fake.received, timeout=5000)
        window.commit.setCurrentText("bar")
        qtbot.waitUntil(lambda: ("/ostinato/commit", ["bar"]) in fake.received, timeout=5000)
        fake.push(commit=3.0)  # set elsewhere (the config file, another client): it joins
        qtbot.waitUntil(lambda: window.commit.currentText() == "3 beats", timeout=5000)
        fake.push(commit=1.5)
        qtbot.waitUntil(lambda: window.commit.currentText() == "1.5 beats", timeout=5000)
        assert items() == ["bar", "0.5 beat", "1 beat", "1.5 beats", "2 beats", "3 beats"]
        fake.push(commit="bar")
        qtbot.waitUntil(lambda: window.commit.currentText() == "bar", timeout=5000)
        # the daemon's state moved the menu: only the musician's choices were sent
        commits = [args for address, args in fake.received if address == "/ostinato/commit"]
        assert commits == [[1.0], ["bar"]]
    finally:
        window.close()
        fake.close()


def test_commit_reaches_the_running_daemon_and_follows_it(qtbot, panel, daemon):
    port, _ = daemon
    client = ControlClient(port=port)
    try:
        assert panel.commit.currentText() == "1 beat"  # the daemon's default, shown
        show_tab(panel, panel.commit)
        panel.commit.setCurrentText("2 beats")
        qtbot.waitUntil(lambda: client.status()["commit"] == 2.0, timeout=5000)
        client.set("commit", 0.5)  # another client: the panel follows
        qtbot.waitUntil(lambda: panel.commit.currentText() == "0.5 beat", timeout=5000)
        client.set("commit", "4")
        qtbot.waitUntil(lambda: panel.commit.currentText() == "4 beats", timeout=5000)
        client.set("commit", "bar")
        qtbot.waitUntil(lambda: panel.commit.currentText() == "bar", timeout=5000)
        assert panel.last_error == ""  # nothing the panel sent was refused
    finally:
        client.set("commit", 1)  # the default again, for the tests after
        client.close()
