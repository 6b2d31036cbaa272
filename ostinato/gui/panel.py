"""``ostinato gui``: the control panel, one OSC client of the daemon among others.

Qt work stays on the GUI thread. OSC traffic runs on the client's own thread, which only
emits a Qt signal per message (delivered queued to the GUI thread); the panel never waits
for a reply, so a slow or absent daemon cannot freeze it. Changes go out as the controls
move; the daemon's pushed state moves the controls back (without echoing), so two panels or
a hardware knob (MIDI CC learn) stay in step. The controls' ranges come from the settings
schema (:mod:`ostinato.settings`), the one the daemon checks against. The window fits a
laptop's 1280 × 720: the controls in a column beside the piano roll, the rarer knobs in tabs.

Panic is the one request the panel waits for: it shows "panic sent" until the daemon
answers ``/ostinato/ok /ostinato/panic``, sends it again every 250 ms meanwhile (releasing
notes twice is harmless; a lost datagram is not), and says so when no answer comes.

The take buttons (Regenerate R, Keep K, Undo U; Shift+K releases every kept bar) send their
address once (a take action done twice is not the same as once) and show the daemon's answer,
what was done or why nothing was, in the status bar; the kept loop places show beside them.
"""

from __future__ import annotations

import functools
import math
import subprocess
import sys
import time
from collections.abc import Callable

from PyQt6.QtCore import QObject, QRect, QSettings, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QColor, QKeySequence, QPainter, QPen, QShortcut
from PyQt6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QSlider,
    QSpinBox,
    QStatusBar,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ostinato.control_client import PREFIX, ControlClient, state_dict
from ostinato.settings import MODES, SETTINGS, TRIGGERS, format_commit

INSTRUMENTS = [  # (label, GM program; -1 = drums): what the bundled model knows best
    ("Drums", -1), ("Bass", 33), ("Synth bass", 38), ("Piano", 0), ("E. piano", 4),
    ("Pad", 89), ("Lead", 80), ("Vibes", 11),
]  # fmt: skip
TEMPERATURE_SCALE = 100  # slider steps per unit
VARIATION_SCALE = 100  # slider steps per unit (0 … 1)
AUTO = 0  # the spin boxes' value shown as "auto" (bars, loop bars): sent as "auto"
COMMIT_CHOICES = (None, 0.5, 1.0, 2.0)  # the commit menu (None: bar); a state's other value joins
LOOP_SOURCES = {"set": "set", "daw": "DAW", "repetition": "repetition"}  # state's loop_from
HUMAN_COLOUR, GENERATED_COLOUR = QColor("#3d8bfd"), QColor("#fd7e14")
STALE_AFTER_S = 1.5  # no heartbeat for this long: disconnected
PANIC_RETRY_MS = 250  # panic is sent again until the daemon acknowledges it …
PANIC_TRIES = 8  # … this many times (2 s), then the panel says it was not acknowledged
TAKE_KEYS = {"regenerate": "R", "keep": "K", "undo": "U"}  # and Shift+K: keep 0 (release all)
TAKE_ADDRESSES = {f"{PREFIX}/{action}": action for action in TRIGGERS}
DEFAULT_SIZE = (1040, 640)  # opens within a laptop's 1280 × 720, roll and all
CONTROLS_WIDTH = 460  # the column of controls; the roll takes the rest of the width


class Bridge(QObject):
    """Carries OSC messages from the client's thread to the GUI thread."""

    message = pyqtSignal(str, list)


class PianoRoll(QWidget):
    """The last bars: what the musician played (blue) and what Ostinato played (orange)."""

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumHeight(140)
        self.beats_per_bar = 4.0
        self.now = 0.0
        self.notes: list[tuple[float, float, int, bool]] = []
        self.bars = 4

    def set_roll(self, args: list) -> None:
        if len(args) < 2:
            return
        self.beats_per_bar, self.now = float(args[0]), float(args[1])
        rest = args[2:]
        self.notes = [
            (float(rest[i]), float(rest[i + 1]), int(rest[i + 2]), bool(rest[i + 3]))
            for i in range(0, len(rest) - 3, 4)
        ]
        self.update()

    def _span(self) -> tuple[float, float]:
        """The beats shown: the last bars up to the end of the next one (Ostinato's notes are
        there ahead of time, generated before their bar starts)."""
        span = self.bars * self.beats_per_bar
        end = (math.floor(self.now / self.beats_per_bar) + 2) * self.beats_per_bar
        return end - span, span

    def note_rects(self) -> list[tuple[QRect, bool]]:
        """Where each note is drawn, and whether Ostinato played it."""
        if not self.notes:
            return []
        start, span = self._span()
        w, h = self.width(), self.height()
        pitches = [p for _, _, p, _ in self.notes]
        lo, hi = min(pitches) - 2, max(pitches) + 2
        row = h / max(12, hi - lo)
        rects = []
        for begin, length, pitch, generated in self.notes:
            x = (begin - start) / span * w
            width = max(2.0, length / span * w)
            y = h - (pitch - lo) * row
            rects.append((QRect(int(x), int(y - row), int(width), max(2, int(row - 1))),
                          generated))  # fmt: skip
        return rects

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        w, h = self.width(), self.height()
        painter.fillRect(0, 0, w, h, QColor("#1e1e24"))
        start, span = self._span()
        painter.setPen(QPen(QColor("#44444f"), 1))
        first_bar = int(start // self.beats_per_bar) + 1
        for k in range(first_bar, first_bar + self.bars + 1):
            x = (k * self.beats_per_bar - start) / span * w
            painter.drawLine(int(x), 0, int(x), h)
        playhead = (self.now - start) / span * w
        painter.setPen(QPen(QColor("#dddddd"), 1))
        painter.drawLine(int(playhead), 0, int(playhead), h)
        if not self.notes:
            painter.setPen(QColor("#888"))
            painter.drawText(8, 18, "no notes yet")
            return
        for rect, generated in self.note_rects():
            painter.fillRect(rect, GENERATED_COLOUR if generated else HUMAN_COLOUR)


def loop_status(state: dict) -> str:
    """The status bar's permanent text: "loop 4 bars (DAW) · kept 1,3 · fallbacks 2" (each
    part only when there is one: a loop being played over, loop places kept, bars played late
    from an earlier bar)."""
    parts = []
    length = int(state.get("loop_length", 0) or 0)
    if length > 0:
        source = str(state.get("loop_from", ""))
        where = f" ({LOOP_SOURCES.get(source, source)})" if source else ""
        parts.append(f"loop {length} bar{'s' if length != 1 else ''}{where}")
    kept = str(state.get("kept", "") or "")
    if kept:
        parts.append(f"kept {kept}")
    fallbacks = int(state.get("fallbacks", 0) or 0)
    if fallbacks > 0:
        parts.append(f"fallbacks {fallbacks}")
    return " · ".join(parts)


def kept_text(state: dict) -> str:
    """What is kept, for the label beside the take buttons: "kept: loop places 1, 3", "kept:
    the answer", "nothing kept"."""
    items = [item for item in str(state.get("kept", "") or "").split(",") if item]
    places = [item for item in items if item != "answer"]
    parts = []
    if places:
        parts.append(f"loop place{'s' if len(places) > 1 else ''} {', '.join(places)}")
    if "answer" in items:
        parts.append("the answer")
    return f"kept: {' and '.join(parts)}" if parts else "nothing kept"


def clock_name(state: dict) -> str:
    """The clock line's source: "midi", "internal", "none", or "Link, 2 peers"."""
    source = str(state.get("clock", "?"))
    if source != "link":
        return source
    peers = int(state.get("link_peers", 0) or 0)
    return f"Link, {peers} peer{'' if peers == 1 else 's'}"


def _bars_value(value) -> int:
    """A state's "auto" or bar count → the spin box's value (AUTO shows "auto")."""
    return AUTO if str(value) in ("auto", "none") else int(value)


def _bars_arg(value: int) -> int | str:
    """A spin box's value → the OSC argument."""
    return "auto" if value == AUTO else int(value)


def commit_label(commit_beats: float | None) -> str:
    """The commit menu's words: "bar", "0.5 beat", "1 beat", "2 beats" (after "commit every")."""
    if commit_beats is None:
        return "bar"
    return f"{format_commit(commit_beats)} beat{'s' if commit_beats > 1 else ''}"


def _commit_value(value) -> float | None:
    """A state's "bar" or number of beats → the menu's value (None: bar)."""
    return None if str(value) in ("bar", "none") else float(value)


def _spin_box(lo: int, hi: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    return box


def _double_spin_box(lo: float, hi: float, step: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(2)
    box.setRange(lo, hi)
    box.setSingleStep(step)
    return box


class BeatLight(QLabel):
    def __init__(self) -> None:
        super().__init__()
        self.setFixedSize(22, 22)
        self.set_on(False, downbeat=False)

    def set_on(self, on: bool, downbeat: bool) -> None:
        colour = ("#ff5555" if downbeat else "#55dd55") if on else "#333"
        self.setStyleSheet(f"background:{colour}; border-radius:11px; border:1px solid #111;")


class Panel(QMainWindow):
    def __init__(self, host: str = "127.0.0.1", port: int = 9000) -> None:
        super().__init__()
        self.setWindowTitle("Ostinato")
        self.host, self.port = host, port
        self.state: dict = {}
        self.last_heartbeat = 0.0
        self.heartbeat: tuple = ()
        self.last_error = ""
        self._updating = False  # controls moved by the daemon's state: not sent back
        self.bridge = Bridge()
        self.bridge.message.connect(self._on_message)
        self.client = ControlClient(host, port, on_message=self.bridge.message.emit)
        self._build()
        self._shortcuts()
        self.settings = QSettings("Ostinato", "panel")
        geometry = self.settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        self._fit_screen()
        self._subscribe_timer = self._timer(5000, self._subscribe)
        self._subscribe_timer.start()
        self._tick_timer = self._timer(30, self._tick)
        self._tick_timer.start()
        self._roll_timer = self._timer(250, self._ask_roll)
        self._roll_timer.start()
        self.panic_status = ""  # "sent" (waiting), "done" (acknowledged) or "failed"
        self.panic_tries = 0
        self._panic_timer = self._timer(PANIC_RETRY_MS, self._panic_retry)
        self._subscribe()

    def _fit_screen(self) -> None:
        """A size saved on a larger screen (or by a taller panel) is cut to this one's."""
        screen = self.screen() or QApplication.primaryScreen()
        if screen is not None:
            room = screen.availableGeometry()
            self.resize(min(self.width(), room.width()), min(self.height(), room.height()))

    def _timer(self, interval_ms: int, slot) -> QTimer:
        timer = QTimer(self)
        timer.setInterval(interval_ms)
        timer.timeout.connect(slot)
        return timer

    # -- layout ------------------------------------------------------------------------------
    def _build(self) -> None:
        root = QWidget()
        layout = QVBoxLayout(root)

        top = QGridLayout()
        self.connection = QLabel("connecting…")
        self.ports = QLabel("")
        self.clock = QLabel("clock: –")
        self.position = QLabel("–")
        self.position.setStyleSheet("font-size: 20px; font-family: monospace;")
        self.light = BeatLight()
        self.engine = QLabel("engine: –")
        top.addWidget(self.connection, 0, 0, 1, 2)
        top.addWidget(self.ports, 1, 0, 1, 2)
        top.addWidget(self.clock, 2, 0)
        top.addWidget(self.engine, 2, 1)
        top.addWidget(self.light, 0, 2, 2, 1)
        top.addWidget(self.position, 0, 3, 2, 1)
        layout.addLayout(top)

        sliders = QHBoxLayout()
        box = QGroupBox("Temperature")
        row = QHBoxLayout(box)
        self.temperature = QSlider(Qt.Orientation.Horizontal)
        self.temperature.setRange(5, 200)  # 0.05 … 2.00
        self.temperature.setPageStep(10)
        self.temperature.setMinimumHeight(36)
        self.temperature.setToolTip("[ and ] or Ctrl+↓/↑ step it by 0.05")
        self.temperature_value = QLabel("–")
        self.temperature_value.setStyleSheet("font-size: 26px; font-weight: bold;")
        self.temperature_value.setMinimumWidth(70)
        row.addWidget(self.temperature, 1)
        row.addWidget(self.temperature_value)
        sliders.addWidget(box, 3)
        self.temperature.valueChanged.connect(self._temperature_moved)

        box = QGroupBox("Variation")
        box.setToolTip(SETTINGS["variation"].help)
        row = QHBoxLayout(box)
        self.variation = QSlider(Qt.Orientation.Horizontal)
        self.variation.setRange(0, VARIATION_SCALE)  # 0.00 … 1.00
        self.variation.setPageStep(10)
        self.variation.setMinimumHeight(36)
        self.variation.setToolTip("0 = the previous pass note for note, 1 = free")
        self.variation_value = QLabel("–")
        self.variation_value.setStyleSheet("font-size: 20px; font-weight: bold;")
        self.variation_value.setMinimumWidth(50)
        row.addWidget(self.variation, 1)
        row.addWidget(self.variation_value)
        sliders.addWidget(box, 2)
        self.variation.valueChanged.connect(self._variation_moved)
        layout.addLayout(sliders)

        # Below the sliders: the controls in a column, the piano roll beside them taking the
        # rest (a laptop screen is wide, not tall).
        body = QHBoxLayout()
        controls_box = QWidget()
        controls_box.setMaximumWidth(CONTROLS_WIDTH)
        controls = QVBoxLayout(controls_box)
        controls.setContentsMargins(0, 0, 0, 0)
        roll_column = QVBoxLayout()
        body.addWidget(controls_box)
        body.addLayout(roll_column, 1)
        layout.addLayout(body, 1)

        top_p, penalty, bars = SETTINGS["top_p"], SETTINGS["repetition_penalty"], SETTINGS["bars"]
        self.top_k = _spin_box(0, 128)
        self.top_k.setSpecialValueText("off")
        self.top_p = _double_spin_box(0.05, top_p.hi or 1.0, 0.01)
        self.penalty = _double_spin_box(penalty.lo or 1.0, penalty.hi or 3.0, 0.05)
        self.mode = QComboBox()
        self.mode.addItems(list(MODES))
        self.bars = _spin_box(AUTO, int(bars.hi or 64))
        self.bars.setSpecialValueText("auto")
        self.loop_bars = _spin_box(AUTO, int(SETTINGS["loop_bars"].hi or 64))
        self.loop_bars.setSpecialValueText("auto")
        self.style_menu = QComboBox()
        self.style_menu.addItems(["auto", *SETTINGS["style"].choices])
        self.guidance = _double_spin_box(0.0, SETTINGS["guidance"].hi or 8.0, 0.25)
        self.guidance.setSpecialValueText("off")
        self.density = _double_spin_box(0.0, SETTINGS["density"].hi or 8.0, 0.25)
        self.density.setSpecialValueText("no limit")
        self.commit = QComboBox()  # each item's data: its OSC argument ("bar" or beats)
        for beats in COMMIT_CHOICES:
            self._commit_index(beats)
        for widget, name in ((self.top_k, "top_k"), (self.top_p, "top_p"),
                             (self.penalty, "repetition_penalty"), (self.mode, "mode"),
                             (self.bars, "bars"), (self.loop_bars, "loop_bars"),
                             (self.style_menu, "style"), (self.guidance, "guidance"),
                             (self.density, "density"), (self.commit, "commit")):  # fmt: skip
            widget.setToolTip(SETTINGS[name].help)
        self.fill = QCheckBox("a fill on the loop's last bar")
        self.fill.setToolTip(SETTINGS["fill"].help)
        self.key_lock = QCheckBox("stay in the key of what is playing")
        self.key_lock.setToolTip(
            "pitched notes keep to the key heard in the context, plus any note it used"
        )
        mode_row = QFormLayout()
        mode_row.addRow("mode", self.mode)
        controls.addLayout(mode_row)
        # The rarer knobs, one tab each kind, so the roll keeps its room on a laptop screen.
        self.more = QTabWidget()
        tabs: list[tuple[str, list[tuple[str, QWidget]]]] = [
            ("Answer && loop", [("bars of answer", self.bars), ("loop bars", self.loop_bars),
                               ("fill", self.fill), ("commit every", self.commit)]),
            ("Sampling", [("top-k", self.top_k), ("top-p", self.top_p),
                          ("repetition penalty", self.penalty), ("density", self.density),
                          ("key lock", self.key_lock)]),
            ("Style", [("style", self.style_menu), ("guidance", self.guidance)]),
        ]  # fmt: skip
        for title, rows in tabs:
            page = QWidget()
            page_form = QFormLayout(page)
            for label, knob in rows:
                page_form.addRow(label, knob)
            self.more.addTab(page, title)
        self.top_k.valueChanged.connect(lambda v: self._set("top_k", int(v)))
        self.top_p.valueChanged.connect(lambda v: self._set("top_p", float(v)))
        self.penalty.valueChanged.connect(lambda v: self._set("repetition_penalty", float(v)))
        self.density.valueChanged.connect(lambda v: self._set("density", float(v)))
        self.mode.currentTextChanged.connect(lambda v: self._set("mode", v))
        self.style_menu.currentTextChanged.connect(lambda v: self._set("style", v))
        self.guidance.valueChanged.connect(lambda v: self._set("guidance", float(v)))
        self.bars.valueChanged.connect(lambda v: self._set("bars", _bars_arg(v)))
        self.loop_bars.valueChanged.connect(lambda v: self._set("loop_bars", _bars_arg(v)))
        self.fill.toggled.connect(lambda on: self._set("fill", int(on)))
        self.key_lock.toggled.connect(lambda on: self._set("key_lock", int(on)))
        self.commit.currentIndexChanged.connect(
            lambda _: self._set("commit", self.commit.currentData())
        )

        instruments = QGroupBox("Instruments Ostinato plays")
        grid = QGridLayout(instruments)
        self.follow = QCheckBox("what I play")
        self.follow.setToolTip("answer with the instruments the musician plays")
        grid.addWidget(self.follow, 0, 0)
        self.instrument_boxes: dict[int, QCheckBox] = {}
        for i, (label, program) in enumerate(INSTRUMENTS, start=1):
            check = QCheckBox(label)
            self.instrument_boxes[program] = check
            grid.addWidget(check, i // 3, i % 3)
            check.toggled.connect(self._instruments_changed)
        self.follow.toggled.connect(self._instruments_changed)
        controls.addWidget(instruments)

        channels = QWidget()
        channel_form = QFormLayout(channels)
        self.out_channels = QLineEdit()
        self.out_channels.setToolTip(SETTINGS["out_channels"].help + ", e.g. bass=2,drums=10")
        self.in_channels = QLineEdit()
        self.in_channels.setToolTip(SETTINGS["in_channels"].help + ", e.g. 2=bass,10=drums")
        self.program_change = QCheckBox("send Program Change for a GM synth")
        self.program_change.setToolTip(SETTINGS["program_change"].help)
        channel_form.addRow("out (instrument=channel)", self.out_channels)
        channel_form.addRow("in (channel=instrument)", self.in_channels)
        channel_form.addRow("programs", self.program_change)
        self.out_channels.editingFinished.connect(
            lambda: self._set("out_channels", self.out_channels.text())
        )
        self.in_channels.editingFinished.connect(
            lambda: self._set("in_channels", self.in_channels.text())
        )
        self.program_change.toggled.connect(lambda on: self._set("program_change", int(on)))
        self.more.addTab(channels, "Channels")
        controls.addWidget(self.more)

        takes = QHBoxLayout()
        self.take_buttons: dict[str, QPushButton] = {}
        tips = {
            "regenerate": "throw away the next bar (continue: the rest of the answer) and "
            "generate it again",
            "keep": "play the bar playing now again at its place in the loop each pass "
            "(continue: the answer); Shift+K releases every kept bar",
            "undo": "go back one take action: release a keep, bring a regenerated bar back",
        }
        for action, key in TAKE_KEYS.items():
            button = QPushButton(f"{action.capitalize()}  ({key})")
            button.setToolTip(tips[action])
            button.clicked.connect(lambda _checked=False, a=action: self.take(a))
            takes.addWidget(button)
            self.take_buttons[action] = button
        self.kept_label = QLabel("nothing kept")
        self.kept_label.setToolTip("the loop places that play a kept bar again each pass")
        takes.addWidget(self.kept_label)
        controls.addLayout(takes)
        self.last_take = ""  # the daemon's last answer to a take action

        self.panic_button = QPushButton("PANIC  (Esc)")
        self.panic_button.setStyleSheet(
            "background:#c0392b; color:white; font-weight:bold; font-size:16px; padding:8px;"
        )
        self.panic_button.clicked.connect(self.panic)
        controls.addWidget(self.panic_button)
        controls.addStretch(1)

        self.roll = PianoRoll()
        roll_column.addWidget(self.roll, 1)
        legend = QLabel(
            f"<span style='color:{HUMAN_COLOUR.name()}'>■ played</span> &nbsp; "
            f"<span style='color:{GENERATED_COLOUR.name()}'>■ Ostinato</span>"
        )
        roll_column.addWidget(legend)
        self.setCentralWidget(root)
        self.status = QStatusBar()
        self.setStatusBar(self.status)
        self.loop_status = QLabel("")  # the loop played over, and late bars (kept in view)
        self.loop_status.setToolTip(
            "the loop Ostinato plays over (set by loop bars, from the DAW's loop jumps or "
            "from your repetition); kept: the loop places that play a kept bar again; "
            "fallbacks: bars played again from an earlier bar because generation was late"
        )
        self.status.addPermanentWidget(self.loop_status)
        self.status.showMessage(f"OSC {self.host}:{self.port}")
        self.resize(*DEFAULT_SIZE)

    def _shortcuts(self) -> None:
        # The panel is the application's only window: its keys work whatever has the focus.
        app_wide = Qt.ShortcutContext.ApplicationShortcut
        keys_and_slots: list[tuple[QKeySequence, Callable[[], None]]] = [
            (QKeySequence(Qt.Key.Key_Escape), self.panic),
            (QKeySequence("Shift+K"), functools.partial(self.take, "keep", 0)),
        ]
        for action, key in TAKE_KEYS.items():
            keys_and_slots.append((QKeySequence(key), functools.partial(self.take, action)))
        for keys, step in (("]", 5), ("Ctrl+Up", 5), ("[", -5), ("Ctrl+Down", -5)):
            keys_and_slots.append((QKeySequence(keys), functools.partial(self._nudge, step)))
        for sequence, slot in keys_and_slots:
            shortcut = QShortcut(sequence, self)
            shortcut.setContext(app_wide)
            shortcut.activated.connect(slot)
        quit_action = QAction("Quit", self)
        quit_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Quit))
        quit_action.triggered.connect(self.close)
        self.addAction(quit_action)

    def _commit_index(self, commit_beats: float | None) -> int:
        """The commit menu's item for ``commit_beats``, added in its place when missing (a
        value set elsewhere: the config file, another OSC client)."""
        data = "bar" if commit_beats is None else commit_beats
        items = [self.commit.itemData(i) for i in range(self.commit.count())]
        if data in items:
            return items.index(data)
        before = [] if data == "bar" else [d for d in items if d == "bar" or d < data]
        self.commit.insertItem(len(before), commit_label(commit_beats), data)
        return len(before)

    # -- out ---------------------------------------------------------------------------------
    def _set(self, name: str, *args) -> None:
        if self._updating:
            return
        self._send(f"{PREFIX}/{name}", *args)

    def _send(self, address: str, *args) -> None:
        try:
            self.client.send(address, *args)
        except OSError as exc:  # no network route, a host that does not resolve …
            self.status.showMessage(f"cannot reach {self.host}:{self.port}: {exc}", 5000)

    def _temperature_moved(self, value: int) -> None:
        self.temperature_value.setText(f"{value / TEMPERATURE_SCALE:.2f}")
        self._set("temperature", value / TEMPERATURE_SCALE)

    def _variation_moved(self, value: int) -> None:
        self.variation_value.setText(f"{value / VARIATION_SCALE:.2f}")
        self._set("variation", value / VARIATION_SCALE)

    def _nudge(self, step: int) -> None:
        self.temperature.setValue(self.temperature.value() + step)

    def _instruments_changed(self) -> None:
        follow = self.follow.isChecked()
        for check in self.instrument_boxes.values():
            check.setEnabled(not follow)
        if self._updating:
            return
        chosen = [p for p, check in self.instrument_boxes.items() if check.isChecked()]
        if follow or not chosen:
            self._set("programs", "auto")
        else:
            self._set("programs", ",".join("drums" if p == -1 else str(p) for p in chosen))

    def take(self, action: str, *args) -> None:
        """A take action: sent once, its answer shown when it comes."""
        self._send(f"{PREFIX}/{action}", *args)
        self.status.showMessage(f"{action} sent", 2000)

    def panic(self) -> None:
        """Send panic until the daemon acknowledges it (see the module docstring)."""
        self.panic_tries = 0
        self._send_panic()
        self._panic_timer.start()

    def _send_panic(self) -> None:
        self.panic_tries += 1
        self.panic_status = "sent"
        self._send(f"{PREFIX}/panic")
        self.status.showMessage(f"panic sent, waiting for the daemon (try {self.panic_tries})")

    def _panic_retry(self) -> None:
        if self.panic_tries < PANIC_TRIES:
            self._send_panic()
            return
        self._panic_timer.stop()
        self.panic_status = "failed"
        self.status.showMessage(
            f"panic NOT acknowledged: no answer from {self.host}:{self.port} after "
            f"{self.panic_tries} tries"
        )

    def _subscribe(self) -> None:
        self._send(f"{PREFIX}/subscribe")

    def _ask_roll(self) -> None:
        if self.connected:
            self._send(f"{PREFIX}/roll")

    # -- in ----------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return time.monotonic() - self.last_heartbeat < STALE_AFTER_S

    def _on_message(self, address: str, args: list) -> None:
        if address == f"{PREFIX}/heartbeat":
            self.last_heartbeat = time.monotonic()
            self.heartbeat = tuple(args)
            if len(args) >= 6:
                self.engine.setText(f"engine: bar {args[4]:.1f} ms · misses {int(args[5])}")
        elif address == f"{PREFIX}/state":
            self.last_heartbeat = time.monotonic()
            self._show_state(state_dict(args))
        elif address == f"{PREFIX}/roll":
            self.roll.set_roll(args)
        elif address == f"{PREFIX}/ok" and args and args[0] == f"{PREFIX}/panic":
            if self.panic_status == "sent":
                self._panic_timer.stop()
                self.panic_status = "done"
                self.status.showMessage("panic done: every note released", 3000)
        elif address == f"{PREFIX}/ok" and args and args[0] in TAKE_ADDRESSES:
            self.last_take = f"{TAKE_ADDRESSES[args[0]]}: {args[1] if len(args) > 1 else 'done'}"
            self.status.showMessage(self.last_take, 8000)
        elif address == f"{PREFIX}/error" and len(args) >= 2:
            self.last_error = f"{args[0]}: {args[1]}"
            self.status.showMessage(f"refused {self.last_error}", 5000)

    def _show_state(self, state: dict) -> None:
        self.state = state
        self._updating = True
        try:
            if not self.temperature.isSliderDown():
                self.temperature.setValue(round(float(state["temperature"]) * TEMPERATURE_SCALE))
                self.temperature_value.setText(f"{float(state['temperature']):.2f}")
            self.top_k.setValue(int(state["top_k"]))
            self.top_p.setValue(float(state["top_p"]))
            self.penalty.setValue(float(state["repetition_penalty"]))
            self.density.setValue(float(state.get("density", SETTINGS["density"].default)))
            self.mode.setCurrentText(str(state["mode"]))
            self.style_menu.setCurrentText(str(state.get("style", "auto")))
            self.guidance.setValue(float(state.get("guidance", 0.0)))
            styles = bool(int(state.get("style_tokens", 1)))  # the model has style tokens
            for widget in (self.style_menu, self.guidance):
                widget.setEnabled(styles)
                if not styles:
                    widget.setToolTip("this model has no style tokens")
            if not self.variation.isSliderDown() and "variation" in state:
                variation = float(state["variation"])
                self.variation.setValue(round(variation * VARIATION_SCALE))
                self.variation_value.setText(f"{variation:.2f}")
            self.bars.setValue(_bars_value(state["bars"]))
            self.loop_bars.setValue(_bars_value(state.get("loop_bars", "auto")))
            self.fill.setChecked(bool(int(state.get("fill", 0))))
            self.key_lock.setChecked(bool(int(state.get("key_lock", 1))))
            commit = _commit_value(state.get("commit", "bar"))
            self.commit.setCurrentIndex(self._commit_index(commit))
            for box, key in ((self.out_channels, "out_channels"),
                             (self.in_channels, "in_channels")):  # fmt: skip
                if key in state and not box.hasFocus():
                    box.setText(str(state[key]))
            self.program_change.setChecked(bool(int(state.get("program_change", 0))))
            programs = str(state["programs"])
            self.follow.setChecked(programs == "auto")
            chosen = set() if programs == "auto" else {
                -1 if p == "drums" else int(p) for p in programs.split(",")
            }  # fmt: skip
            for program, check in self.instrument_boxes.items():
                check.setChecked(program in chosen)
        finally:
            self._updating = False
        self.ports.setText(
            f"in: {state.get('in_port', '?')} · out: {state.get('out_port', '?')} "
            f"({state.get('backend', '?')}, {state.get('device', '?')})"
        )
        self.loop_status.setText(loop_status(state))
        self.kept_label.setText(kept_text(state))

    def _tick(self) -> None:
        """30 ms: connection, clock and the beat light, extrapolated from the heartbeat."""
        if not self.connected:
            self.connection.setText(f"<b>not connected</b> to {self.host}:{self.port}")
            self.light.set_on(False, downbeat=False)
            return
        self.connection.setText(f"connected to {self.host}:{self.port}")
        if len(self.heartbeat) < 4:
            return
        bpm, bar, beat, running = self.heartbeat[:4]
        loop = ""
        loop_start, loop_end = (float(self.state.get(k, -1)) for k in ("loop_start", "loop_end"))
        if loop_end > loop_start >= 0:
            loop = f" · loop {loop_end - loop_start:g} beats from beat {loop_start:g}"
        self.clock.setText(f"clock: {clock_name(self.state)} · {bpm:.1f} BPM{loop}")
        if not running or bar < 0:
            known = int(self.state.get("position_known", 1))
            self.position.setText("stopped" if known else "waiting for Start")
            self.light.set_on(False, downbeat=False)
            return
        beats_per_bar = float(self.state.get("beats_per_bar", 4.0))
        now = bar * beats_per_bar + beat + (time.monotonic() - self.last_heartbeat) * bpm / 60
        bar_now, in_bar = divmod(now, beats_per_bar)
        self.position.setText(f"{int(bar_now) + 1:>3}:{int(in_bar) + 1}")
        self.light.set_on(in_bar % 1.0 < 0.15, downbeat=in_bar < 0.15)

    def closeEvent(self, event) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("host", self.host)
        self.settings.setValue("port", self.port)
        for timer in (self._subscribe_timer, self._tick_timer, self._roll_timer,
                      self._panic_timer):  # fmt: skip
            timer.stop()
        self._send(f"{PREFIX}/unsubscribe")
        self.client.close()
        super().closeEvent(event)


def daemon_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    from ostinato.control_client import ControlError

    client = ControlClient(host, port)
    try:
        client.status(timeout=timeout)
        return True
    except ControlError:
        return False
    finally:
        client.close()


def main(host: str | None, port: int | None, start: bool, daemon_args: list[str]) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Ostinato")
    saved = QSettings("Ostinato", "panel")
    host = host or str(saved.value("host", "127.0.0.1"))
    port = port or int(saved.value("port", 9000))
    daemon = None
    if start and not daemon_answers(host, port):
        # No daemon yet: start one with the bundled model, stopped again when the panel closes.
        command = [sys.executable, "-m", "ostinato", "run", "--osc-port", str(port), *daemon_args]
        daemon = subprocess.Popen(command)
    panel = Panel(host, port)
    panel.show()
    try:
        return app.exec()
    finally:
        if daemon is not None:
            daemon.terminate()
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
