"""``ostinato run``: ports + clock + recorder + engine + scheduler + session, and a clean exit.

The input worker is the only consumer of the ports' queue: it validates each raw message
(garbage, truncated running status, stray data bytes are counted and dropped), feeds clock
messages to the clock and notes to the recorder. SIGINT/SIGTERM stop everything and send
note-offs for every sounding note plus All Notes Off on every channel used.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import logging
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ostinato.daemon.clock import Clock
from ostinato.daemon.control import KNOBS, ControlServer, format_programs
from ostinato.daemon.engine import Engine
from ostinato.daemon.ports import MidiPorts, default_backend
from ostinato.daemon.recorder import HUMAN, Recorder
from ostinato.daemon.sender import SenderProcess
from ostinato.daemon.session import Session
from ostinato.settings import GenerationSettings

log = logging.getLogger(__name__)

NO_CLOCK_AFTER_S = 3.0
WEDGED_AFTER_S = 5.0  # the main thread not running this long: exit, to be restarted
SHUTDOWN_DEADLINE_S = 20.0


@dataclass
class DaemonConfig:
    model_dir: Path
    backend: str | None = None
    in_port: str | None = None
    out_port: str | None = None
    clock: str = "midi"  # "midi" (internal tempo until MIDI clock is seen) or "internal"
    bpm: float = 120.0
    beats_per_bar: float = 4.0
    device: str = "auto"
    latency_ms: float = 0.0
    rt_priority: int = 5  # SCHED_FIFO priority of the sender (JACK's default: 10); 0 = off
    lookahead_ms: float = 250.0
    client_name: str = "ostinato"
    stats_json: Path | None = None  # written at shutdown: timing of every note sent
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    osc_host: str = "127.0.0.1"
    osc_port: int | None = 9000  # None: no OSC control
    osc_allow_remote: bool = False  # needed to bind anything but loopback
    config_path: Path | None = None  # where learned MIDI CCs are saved ([cc] table)
    cc_map: dict[int, str] = field(default_factory=dict)  # CC number → setting


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def parse_meter(text: str) -> float:
    """'4/4' → 4 beats, '3/4' → 3, '6/8' → 3, '7/8' → 3.5 (beats are quarter notes)."""
    try:
        num, den = (int(x) for x in text.split("/"))
    except ValueError as exc:
        raise ValueError(f"meter must look like 4/4 or 7/8, got {text!r}") from exc
    if num < 1 or den not in (2, 4, 8, 16) or not 1 <= num * 4 / den <= 16:
        raise ValueError(f"unsupported meter {text!r}")
    return num * 4 / den


_DATA_LEN = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}


class Daemon:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.engine = Engine(config.model_dir, device=config.device)
        self.clock = Clock(bpm=config.bpm)
        self.recorder = Recorder(beats_per_bar=config.beats_per_bar)
        # The output port belongs to the sender process (see sender.py for why); it opens
        # first, so the input is polled from the moment it exists (see start()).
        self.scheduler = SenderProcess(
            self.clock.snapshot, config.backend or default_backend(), config.out_port,
            config.client_name, latency_ms=config.latency_ms, rt_priority=config.rt_priority,
        )  # fmt: skip
        try:
            self.ports = MidiPorts(config.backend, config.in_port,
                                   client_name=config.client_name, with_output=False)  # fmt: skip
        except Exception:
            self.scheduler.stop()
            raise
        self.clock.map_listeners.append(self.scheduler.push_tempo)
        self.session = Session(
            self.engine, self.clock, self.scheduler, self.recorder, config.settings,
            config.beats_per_bar, config.lookahead_ms,
        )  # fmt: skip
        self.garbage = 0
        self._settings_lock = threading.Lock()  # OSC and CC changes apply one at a time
        self.sent_log: list[tuple[float, float, float, int]] = []  # beat, due, sent, note
        self.tick_log: list[float] = []  # arrival time of every clock tick
        self.input_log: list[tuple[float, list[int]]] = []  # beat and bytes of notes heard
        if config.stats_json is not None:
            self.scheduler.on_note_sent = self._log_note
        self.scheduler.on_note_dropped = self._log_drop
        self.drop_log: list[tuple[float, float, float, bool]] = []  # beat, due, when, why
        self._last_drop_bar = -1
        self._stop = threading.Event()
        self._input_thread = threading.Thread(target=self._input_loop, name="ostinato-input",
                                              daemon=True)  # fmt: skip
        self.cc_map = {int(cc): name for cc, name in config.cc_map.items()}
        self._learning: str | None = None
        self._save_lock = threading.Lock()  # one write of the config file at a time
        self.control: ControlServer | None = None
        if config.osc_port is not None:
            self.control = self._open_control()
        # Input is polled from now on: clock ticks left queued in rtmidi while the model
        # warms up would come out as one backlog whose arrival times can only be estimated
        # afterwards, an estimate later polls correct by up to a tick, which reads as a
        # duplicate tick and leaves the beat count one behind.
        self._input_thread.start()

    # -- control (OSC thread, input thread) -------------------------------------------------
    def _open_control(self) -> ControlServer | None:
        host = self.config.osc_host
        if host not in LOOPBACK and not self.config.osc_allow_remote:
            raise ValueError(
                f"OSC would listen on {host}, reachable from other machines: pass "
                "--osc-allow-remote to mean it"
            )
        try:
            control = ControlServer(self, host, self.config.osc_port)
        except OSError as exc:
            log.error(
                "OSC control off: cannot listen on %s:%d (%s); another Ostinato running? "
                "Use --osc-port", host, self.config.osc_port, exc.strerror,
            )  # fmt: skip
            return None
        if host not in LOOPBACK:
            log.warning("OSC control listens on %s: anyone on the network can drive it", host)
        return control

    def apply(self, **changes) -> None:
        """Change settings (validated; ValueError changes nothing). The session reads the
        new object at its next bar; the real-time path never waits for this. Knob settings
        (a slider dragged, a CC turned) log at debug level, the rest at info."""
        with self._settings_lock:
            self.session.settings = self.session.settings.replace(**changes)
        quiet = all(name in KNOBS for name in changes)
        (log.debug if quiet else log.info)(
            "settings: %s", ", ".join(f"{k}={v}" for k, v in changes.items())
        )
        if self.control is not None:
            self.control.changed()

    def panic(self) -> None:
        self.scheduler.panic()
        log.info("panic: every note released")

    def learn(self, setting: str) -> None:
        self._learning = setting
        log.info("MIDI learn: move a knob to drive %s", setting)
        if self.control is not None:
            self.control.changed()

    def unlearn(self, setting: str) -> None:
        self.cc_map = {cc: name for cc, name in self.cc_map.items() if name != setting}
        self._save_cc_map()

    def _on_cc(self, channel: int, cc: int, value: int) -> None:
        learning = self._learning
        if learning is not None:
            self._learning = None
            mapped = {c: n for c, n in self.cc_map.items() if n != learning}
            mapped[cc] = learning
            self.cc_map = mapped
            log.info("MIDI learn: CC %d drives %s", cc, learning)
            # this is the MIDI input thread: the file is written off it, clock ticks keep coming
            threading.Thread(target=self._save_cc_map, name="ostinato-save-cc").start()
        name = self.cc_map.get(cc)
        if name is None:
            return
        try:
            self.apply(**{name: KNOBS[name].value(value)})
        except ValueError as exc:
            log.warning("CC %d → %s: %s", cc, name, exc)

    def _save_cc_map(self) -> None:
        with self._save_lock:
            self._write_cc_map()

    def _write_cc_map(self) -> None:
        if self.control is not None:
            self.control.changed()
        path = self.config.config_path
        if path is None:
            log.info("MIDI learn is not saved: no config file (--config)")
            return
        try:
            save_cc_map(path, self.cc_map)
        except OSError as exc:
            log.error("cannot save the CC map to %s: %s", path, exc.strerror)

    def state(self) -> dict:
        """Everything a panel shows, as flat key → value."""
        s = self.session.settings
        tempo = self.clock.snapshot()
        beat = self.clock.beat_now(time.perf_counter())
        bar_ms = list(self.session.bar_ms)[-64:]
        state = {
            "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
            "repetition_penalty": s.repetition_penalty, "mode": s.mode, "bars": s.bars,
            "phrase_bars": s.phrase_bars, "programs": format_programs(s.programs),
            "seed": s.seed, "key_lock": int(s.key_lock),
            "running": self.clock.running, "clock": self.clock.source,
            "bpm": round(tempo.bpm, 2) if tempo else self.config.bpm,
            "beats_per_bar": self.config.beats_per_bar,
            "beat": -1.0 if beat is None else round(beat, 3),
            "bar_ms_p99": round(float(np.percentile(bar_ms, 99)), 2) if bar_ms else 0.0,
            "lookahead_ms": round(self.session.lookahead_s * 1000, 1),
            "deadline_misses": self.scheduler.stats.deadline_misses,
            "late_wakeups": self.scheduler.stats.late_wakeups,
            "notes_sent": self.scheduler.stats.sent_notes,
            "bad_messages": self.garbage,
            "backend": self.ports.backend,
            "in_port": self.config.in_port or "Ostinato In",
            "out_port": self.config.out_port or "Ostinato Out",
            "device": self.engine.device, "model": str(self.config.model_dir),
            "learning": self._learning or "",
            "cc": ",".join(f"{cc}:{name}" for cc, name in sorted(self.cc_map.items())),
        }  # fmt: skip
        return state

    def heartbeat(self) -> tuple:
        tempo = self.clock.snapshot()
        beat = self.clock.beat_now(time.perf_counter())
        bpb = self.config.beats_per_bar
        bar_ms = self.session.bar_ms[-1] if self.session.bar_ms else 0.0
        return (
            float(tempo.bpm if tempo else self.config.bpm),
            -1 if beat is None else int(beat // bpb),
            -1.0 if beat is None else float(beat % bpb),
            int(self.clock.running),
            float(bar_ms),
            int(self.scheduler.stats.deadline_misses),
        )

    def roll(self, bars: int) -> tuple[float, float, list[tuple[float, float, int, bool]]]:
        """The notes heard and played in the last ``bars`` bars (for the panel's roll)."""
        beat = self.clock.beat_now(time.perf_counter())
        with self.session.lock:
            notes = list(self.recorder.notes)
        now = beat if beat is not None else (notes[-1].start_beats if notes else 0.0)
        since = now - bars * self.config.beats_per_bar
        rows = [(n.start_beats, n.duration_beats, n.pitch, n.source != HUMAN)
                for n in notes if n.start_beats >= since]  # fmt: skip
        return self.config.beats_per_bar, now, rows

    def _log_note(
        self, due: float, sent: float, channel: int, pitch: int, velocity: int, note_id: int
    ) -> None:
        tempo = self.clock.snapshot()
        beat = tempo.beat_at(due) if tempo else float("nan")
        self.sent_log.append((beat, due, sent, pitch))

    def _log_drop(self, due: float, when: float, note_id: int, handed_over_late: bool) -> None:
        """A note-on the sender dropped: said once per bar in the log (reports thread)."""
        tempo = self.clock.snapshot()
        beat = tempo.beat_at(due) if tempo else float("nan")
        if self.config.stats_json is not None and len(self.drop_log) < 100_000:
            self.drop_log.append((beat, due, when, handed_over_late))
        bar = int(beat // self.config.beats_per_bar) if tempo else -1
        if bar != self._last_drop_bar:
            self._last_drop_bar = bar
            log.warning(
                "bar %d: a note %.0f ms late was dropped (%s)", bar + 1, (when - due) * 1000,
                "generated after its time" if handed_over_late else "the sender woke late",
            )  # fmt: skip

    def stats(self) -> dict:
        s = self.scheduler.stats
        return {
            "notes_sent": s.sent_notes,
            "deadline_misses": s.deadline_misses,
            "late_wakeups": s.late_wakeups,
            "sender_realtime": self.scheduler.realtime,
            "sender_pid": self.scheduler.pid,
            "lost_reports": self.scheduler.lost_reports,
            "dropped": [
                {"beat": b, "due": d, "at": t, "handed_over_late": late}
                for b, d, t, late in self.drop_log
            ],
            "gc_frozen_objects": gc.get_freeze_count(),
            "lateness_ms": s.lateness_ms,
            "bar_ms": list(self.session.bar_ms),
            "bar_margin_ms": list(self.session.bar_margin_ms),
            "bars": [
                {
                    "bar": b,
                    "hand_over_ms": h,
                    "generate_ms": g,
                    "notes": n,
                    "margin_ms": m,
                    "first_note_margin_ms": f,
                }
                for b, h, g, n, m, f in self.session.bar_log
            ],
            "bars_generated": self.session.bars_generated,
            "lookahead_ms": self.session.lookahead_s * 1000,
            "bad_messages": self.garbage,
            "clock_ticks": self.tick_log,
            "notes_heard": [{"beat": b, "message": m} for b, m in self.input_log],
            "notes": [{"beat": b, "due": d, "sent": t, "pitch": p} for b, d, t, p in self.sent_log],
        }

    # -- input ------------------------------------------------------------------------------
    def _input_loop(self) -> None:
        """Input worker thread: drain rtmidi's queue every millisecond, parse, dispatch.
        Timestamps come from the backend, so a late poll does not move any event in time;
        polling more often would only take CPU from the MIDI backend's own threads."""
        while not self._stop.is_set():
            events = self.ports.poll()
            if not events:
                time.sleep(0.001)
                continue
            for t, data in events:
                try:
                    self.handle(t, data)
                except Exception:  # a bad message must never stop the input
                    self.garbage += 1
                    log.debug("dropped MIDI message %r", data, exc_info=True)

    def handle(self, t: float, data: list[int]) -> None:
        if not data or not 0x80 <= data[0] <= 0xFF or any(not 0 <= b <= 0x7F for b in data[1:]):
            self.garbage += 1
            return
        status = data[0]
        if status >= 0xF0:
            if status == 0xF8:
                if self.config.stats_json is not None and len(self.tick_log) < 100_000:
                    self.tick_log.append(t)
                self.clock.on_tick(t)
            elif status == 0xFA:
                self.clock.on_start(t)
            elif status == 0xFB:
                self.clock.on_continue(t)
            elif status == 0xFC:
                self.clock.on_stop(t)
            elif status == 0xF2 and len(data) == 3:
                self.clock.on_song_position(t, data[1] | (data[2] << 7))
            return
        kind, channel = status & 0xF0, status & 0x0F
        if len(data) != 1 + _DATA_LEN[kind]:
            self.garbage += 1
            return
        if kind == 0xB0:
            self._on_cc(channel, data[1], data[2])
            return
        if kind in (0x80, 0x90):
            beat = self.clock.beat_now(t)
            if beat is None:
                return
            if self.config.stats_json is not None and len(self.input_log) < 100_000:
                self.input_log.append((beat, list(data)))
            with self.session.lock:
                if kind == 0x90:
                    self.recorder.note_on(beat, channel, data[1], data[2])
                else:
                    self.recorder.note_off(beat, channel, data[1])

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.session.warm_up()
        # Everything loaded so far (onnxruntime, numpy, the tokenizer: ~200k objects) lives as
        # long as the process. A full collection over it holds the GIL for tens of ms, i.e.
        # a late note; frozen, the collector only ever walks what was made while playing.
        gc.collect()
        gc.freeze()
        self._started_at = time.perf_counter()
        if self.config.clock == "internal":
            self.clock.start_internal(time.perf_counter() + 0.2, self.config.bpm)
        self.scheduler.start()
        self.session.start()
        if self.control is not None:
            self.control.start()
            log.info("OSC control on %s:%d", *self.control.address[:2])
        log.info(
            "listening on %r, playing on %r (%s backend, model %s, %s, clock %s)",
            "Ostinato In" if self.config.in_port is None else self.config.in_port,
            "Ostinato Out" if self.config.out_port is None else self.config.out_port,
            self.ports.backend, self.config.model_dir, self.engine.device, self.config.clock,
        )  # fmt: skip

    def poll(self) -> bool:
        """Called every ~100 ms by the main thread: the no-clock fallback. False when the
        note sender is gone (nothing can play: the daemon exits for a restart)."""
        if not self.scheduler.alive:
            log.error("exiting: without its note sender the daemon cannot play")
            return False
        if (
            self.config.clock == "midi"
            and self.clock.source == "none"
            and time.perf_counter() - self._started_at > NO_CLOCK_AFTER_S
        ):
            log.warning(
                "no MIDI clock seen on the input: playing at the internal tempo of %g BPM "
                "(send MIDI clock to follow the DAW)", self.config.bpm,
            )  # fmt: skip
            self.clock.start_internal(time.perf_counter(), self.config.bpm)
        return True

    def shutdown(self) -> None:
        self._stop.set()
        if self.control is not None:
            self.control.close()
        self.session.stop()
        self.scheduler.stop()  # releases every sounding note, CC 123 on used channels
        self._input_thread.join(1.0)
        self.ports.close()
        if self.config.stats_json is not None:
            self.config.stats_json.write_text(json.dumps(self.stats()))
        s = self.scheduler.stats
        log.info("stopped: %d notes sent, %d deadline misses, %d late wake-ups, %d bad "
                 "messages dropped", s.sent_notes, s.deadline_misses, s.late_wakeups,
                 self.garbage)  # fmt: skip


def run_daemon(config: DaemonConfig) -> int:
    # Let the input thread take the GIL within half a millisecond of asking, instead of the
    # default 5 ms, while the generation thread runs Python code: a Stop, a panic or a new
    # tempo map reaches the sender process that much sooner.
    sys.setswitchinterval(0.0005)
    stop = threading.Event()
    daemon = Daemon(config)

    def on_signal(signum, frame) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        daemon.start()
        while not stop.wait(0.1):
            # Watchdog, re-armed ten times a second: if this thread cannot run for
            # WEDGED_AFTER_S, the process is wedged and exits (status 1, every thread's
            # traceback on stderr) so that a service manager restarts it. The note sender has
            # the same watchdog for the known case (a JACK server that stops, or drops the
            # client, leaves python-rtmidi's send spinning on a full buffer with the GIL
            # held); with the sender gone, nothing can play and this loop ends, status 1.
            faulthandler.dump_traceback_later(WEDGED_AFTER_S, exit=True)
            if not daemon.poll():
                code = 1
                break
    finally:
        # Shutting down sends note-offs through the same port: it gets a deadline too, long
        # enough for its joins and for closing the ports on a busy JACK server.
        faulthandler.dump_traceback_later(SHUTDOWN_DEADLINE_S, exit=True)
        daemon.shutdown()
        faulthandler.cancel_dump_traceback_later()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code


def save_cc_map(path: Path, cc_map: dict[int, str]) -> None:
    """Write ``cc_map`` as the ``[cc]`` table of the TOML file at ``path``, keeping every other
    line of the file as it is (comments included)."""
    lines = path.read_text().splitlines() if path.exists() else []
    kept, in_cc = [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            in_cc = re.match(r"\[\s*cc\s*\]\s*(#.*)?$", stripped) is not None
        if not in_cc:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    if cc_map:
        kept += ["", "[cc]  # MIDI CC number = setting it drives (ostinato learn)"]
        kept += [f'{cc} = "{name}"' for cc, name in sorted(cc_map.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(kept) + "\n")
