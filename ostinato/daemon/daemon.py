"""``ostinato run``: ports + clock + recorder + engine + scheduler + session, and a clean exit.

Input arrives on one thread: for JACK, the sender process owns both ports and forwards every
input event with its exact frame time (its reports thread calls :meth:`Daemon.handle`); for
ALSA, CoreMIDI and WinMM an input worker drains python-rtmidi's queue. Either way every message
is checked here, the same for every backend: real-time bytes (clock, transport) go to the
clock first; garbage, truncated messages, stray data bytes, Active Sensing, SysEx and other
messages that are neither notes, All-Notes-Off nor clock are counted and dropped after the time
base has seen them. SIGINT/SIGTERM stop everything and send note-offs for every sounding note
plus All Notes Off on every channel used.

With ``clock = "midi"`` Ostinato plays only on the DAW's clock; ``"auto"`` falls back to the
internal tempo after 3 s without any clock byte; ``"internal"`` never listens to clock.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ostinato.config import CcMap, ConfigError, format_cc_map, save_cc_map
from ostinato.daemon.clock import Clock
from ostinato.daemon.control import ControlServer
from ostinato.daemon.ports import MidiPorts, default_backend
from ostinato.daemon.recorder import HUMAN, Recorder
from ostinato.daemon.sender import SenderProcess
from ostinato.daemon.session import Session
from ostinato.engine.engine import Engine
from ostinato.settings import KNOBS, GenerationSettings, format_programs

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
    clock: str = "midi"  # "midi" (only the DAW's clock), "auto" (internal until clock), "internal"
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
    cc_map: CcMap = field(default_factory=dict)  # (channel or None, CC number) → setting


LOOPBACK = ("127.0.0.1", "::1", "localhost")


_DATA_LEN = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
ALL_NOTES_OFF_CCS = (120, 123)  # All Sound Off, All Notes Off
IGNORED_SYSTEM = {0xF0, 0xF1, 0xF3, 0xF6, 0xF7, 0xFE, 0xFF}


class Daemon:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.engine = Engine(config.model_dir, device=config.device)
        self.engine.vocab.check_meter(config.beats_per_bar)
        self.backend = config.backend or default_backend()
        jack = self.backend == "jack"
        # JACK stamps every event with its own frame: the clock can tell a stray byte
        self.clock = Clock(bpm=config.bpm, exact_stamps=jack)
        self.recorder = Recorder(beats_per_bar=config.beats_per_bar)
        self.garbage = 0  # malformed messages dropped
        self.ignored = 0  # well-formed messages that are not for us (SysEx, Active Sensing…)
        self._stop = threading.Event()
        self.input_log: list[tuple[float, list[int]]] = []  # beat and bytes of notes heard
        self.tick_log: list[float] = []  # arrival time of every clock tick
        # The output port belongs to the sender process (see sender.py for why); it opens
        # first, so the input is read from the moment it exists. For JACK it owns the input
        # port too, and its process callback stamps each event with its frame.
        self.scheduler = SenderProcess(
            self.clock.snapshot, self.backend, config.out_port, config.client_name,
            latency_ms=config.latency_ms, rt_priority=config.rt_priority, with_input=jack,
            in_port=config.in_port, on_input=self._on_input if jack else None,
        )  # fmt: skip
        self.now = self.scheduler.now  # the time line of input stamps and the clock's map
        self.scheduler.on_input_gap = self.clock.on_input_lost  # an xrun: ticks may be gone
        self.ports: MidiPorts | None = None
        if not jack:
            try:
                self.ports = MidiPorts(config.backend, config.in_port,
                                       client_name=config.client_name,
                                       with_output=False)  # fmt: skip
            except Exception:
                self.scheduler.stop()
                raise
        self.clock.map_listeners.append(self.scheduler.push_tempo)
        # SenderProcess offers the Scheduler's interface; the one Protocol both will share is
        # being written (issue 18): mypy reports this ignore as unused once it lands.
        self.session = Session(
            self.engine, self.clock, self.scheduler,  # type: ignore[arg-type]
            self.recorder, config.settings, config.beats_per_bar, config.lookahead_ms,
            config.latency_ms, now=self.now,
        )  # fmt: skip
        self._settings_lock = threading.Lock()  # OSC and CC changes apply one at a time
        self.sent_log: list[tuple[float, float, float, int]] = []  # beat, due, sent, note
        if config.stats_json is not None:
            self.scheduler.on_note_sent = self._log_note
        self.scheduler.on_note_dropped = self._log_drop
        self.drop_log: list[tuple[float, float, float, bool]] = []  # beat, due, when, why
        self._last_drop_bar = -1
        self._waiting_said = False
        self._accepting = False
        self._input_thread = threading.Thread(target=self._input_loop, name="ostinato-input",
                                              daemon=True)  # fmt: skip
        self.cc_map: CcMap = dict(config.cc_map)
        self._learning: str | None = None
        self._save_lock = threading.Lock()  # one write of the config file at a time
        self.control: ControlServer | None = None
        if config.osc_port is not None:
            self.control = self._open_control(config.osc_port)
        # Input is polled from now on: clock ticks left queued in rtmidi while the model
        # warms up would come out as one backlog whose arrival times can only be estimated
        # afterwards, an estimate later polls correct by up to a tick, which reads as a
        # duplicate tick and leaves the beat count one behind.
        self._accepting = True  # input is handled from now on (JACK: the sender's reports)
        if self.ports is not None:
            self._input_thread.start()

    # -- control (OSC thread, input thread) -------------------------------------------------
    def _open_control(self, port: int) -> ControlServer | None:
        host = self.config.osc_host
        if host not in LOOPBACK and not self.config.osc_allow_remote:
            raise ValueError(
                f"OSC would listen on {host}, reachable from other machines: pass "
                "--osc-allow-remote to mean it"
            )
        try:
            control = ControlServer(self, host, port)
        except OSError as exc:
            log.error(
                "OSC control off: cannot listen on %s:%d (%s); another Ostinato running? "
                "Use --osc-port", host, port, exc.strerror,
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
        if learning is not None and cc < 120:  # channel-mode CCs (a DAW's Stop) never learn
            self._learning = None
            mapped = {c: n for c, n in self.cc_map.items() if n != learning}
            mapped[(channel, cc)] = learning  # the knob's own channel: CC 21 elsewhere is not it
            self.cc_map = mapped
            log.info("MIDI learn: CC %d on channel %d drives %s", cc, channel + 1, learning)
            # this is the MIDI input thread: the file is written off it, clock ticks keep coming
            threading.Thread(target=self._save_cc_map, name="ostinato-save-cc").start()
        name = self.cc_map.get((channel, cc)) or self.cc_map.get((None, cc))
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
        except ConfigError as exc:
            log.error("%s", exc)

    def state(self) -> dict:
        """Everything a panel shows, as flat key → value."""
        s = self.session.settings
        tempo = self.clock.snapshot()
        beat = self.clock.beat_now(self.now())
        bar_ms = list(self.session.bar_ms)[-64:]
        clock = self.clock
        heard_bpm = clock.bpm
        loop = self.session.loop
        state = {
            "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
            "repetition_penalty": s.repetition_penalty, "mode": s.mode,
            "bars": "auto" if s.bars is None else s.bars,
            "phrase_bars": s.phrase_bars, "programs": format_programs(s.programs),
            "seed": s.seed, "key_lock": int(s.key_lock),
            "variation": s.variation, "fill": int(s.fill),
            "loop_bars": "auto" if s.loop_bars is None else s.loop_bars,
            "loop_length": loop.bars if loop else 0, "loop_first_bar": loop.start if loop else -1,
            "loop_from": loop.source if loop else "", "fallbacks": self.session.fallbacks,
            "running": clock.running, "clock": clock.source,
            "bpm": round(heard_bpm if heard_bpm else tempo.bpm if tempo else self.config.bpm, 3),
            "position_known": int(clock.position_known),
            "loop_start": -1.0 if clock.loop is None else clock.loop[0],
            "loop_end": -1.0 if clock.loop is None else clock.loop[1],
            "loop_passes": clock.loop_passes, "jumps": clock.jumps,
            "rejected_ticks": clock.rejected_ticks,
            "ignored_messages": self.ignored,
            "input_lost": getattr(self.scheduler, "input_lost", 0),
            "beats_per_bar": self.config.beats_per_bar,
            "beat": -1.0 if beat is None else round(beat, 3),
            "bar_ms_p99": round(float(np.percentile(bar_ms, 99)), 2) if bar_ms else 0.0,
            "lookahead_ms": round(self.session.lookahead_s * 1000, 1),
            "deadline_misses": self.scheduler.stats.deadline_misses,
            "late_wakeups": self.scheduler.stats.late_wakeups,
            "notes_sent": self.scheduler.stats.sent_notes,
            "bad_messages": self.garbage,
            "backend": self.backend,
            "in_port": self.config.in_port or "Ostinato In",
            "out_port": self.config.out_port or "Ostinato Out",
            "device": self.engine.device, "model": str(self.config.model_dir),
            "learning": self._learning or "",
            "cc": format_cc_map(self.cc_map),
        }  # fmt: skip
        return state

    def heartbeat(self) -> tuple:
        tempo = self.clock.snapshot()
        beat = self.clock.beat_now(self.now())
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
        beat = self.clock.beat_now(self.now())
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
            "fallbacks": self.session.fallbacks,
            "lookahead_ms": self.session.lookahead_s * 1000,
            "bad_messages": self.garbage,
            "ignored_messages": self.ignored,
            "clock": {
                "bpm": self.clock.bpm,
                "ticks_counted": self.clock.follower.count,
                "rejected_ticks": self.clock.rejected_ticks,
                "jumps": self.clock.jumps,
                "jumps_followed": self.session.jumps_followed,
                "loop": self.clock.loop,
                "loop_passes": self.clock.loop_passes,
                "position_known": self.clock.position_known,
                "input_gaps": self.clock.input_gaps,
            },
            "skipped_frames": getattr(self.scheduler, "skipped_frames", 0),
            "input_lost": getattr(self.scheduler, "input_lost", 0),
            "clock_ticks": self.tick_log,
            "notes_heard": [{"beat": b, "message": m} for b, m in self.input_log],
            "notes": [{"beat": b, "due": d, "sent": t, "pitch": p} for b, d, t, p in self.sent_log],
        }

    # -- input ------------------------------------------------------------------------------
    def _input_loop(self) -> None:
        """Input worker thread (python-rtmidi backends): drain rtmidi's queue every
        millisecond, parse, dispatch. Timestamps come from the backend, so a late poll does not
        move any event in time; polling more often would only take CPU from the MIDI
        backend's own threads."""
        assert self.ports is not None
        while not self._stop.is_set():
            events = self.ports.poll()
            if not events:
                time.sleep(0.001)
                continue
            for t, data in events:
                self._on_input(t, data)

    def _on_input(self, t: float, data: list[int]) -> None:
        """One message with its time (the input worker, or the JACK sender's reports)."""
        if not self._accepting:
            return
        try:
            self.handle(t, data)
        except Exception:  # a bad message must never stop the input
            self.garbage += 1
            log.debug("dropped MIDI message %r", data, exc_info=True)

    def handle(self, t: float, data: list[int]) -> None:
        if data and data[0] == 0xF0:  # SysEx (MMC, device messages): not for us
            self.ignored += 1
            return
        if not data or not 0x80 <= data[0] <= 0xFF or any(not 0 <= b <= 0x7F for b in data[1:]):
            self.garbage += 1
            return
        status = data[0]
        if status >= 0xF0:
            self._system(t, status, data)
            return
        kind, channel = status & 0xF0, status & 0x0F
        if len(data) != 1 + _DATA_LEN[kind]:
            self.garbage += 1
            return
        if kind == 0xB0:
            if data[1] in ALL_NOTES_OFF_CCS:  # DAWs send these at a stop or a loop jump
                beat = self.clock.beat_now(t)
                if beat is not None:
                    with self.session.lock:
                        self.recorder.all_notes_off(beat, channel)
            self._on_cc(channel, data[1], data[2])
            return
        if kind not in (0x80, 0x90):
            self.ignored += 1  # program change, pitch bend, pressure: not for the model
            return
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

    def _system(self, t: float, status: int, data: list[int]) -> None:
        """Clock and transport to the clock; the rest of the system messages are dropped."""
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
        elif status in IGNORED_SYSTEM and len(data) >= 1:
            self.ignored += 1  # SysEx (MMC), Active Sensing, MTC, song select, tune, reset
        else:
            self.garbage += 1  # undefined status bytes, a truncated song position

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
            self.clock.start_internal(self.now() + 0.2, self.config.bpm)
        self.scheduler.start()
        self.session.start()
        if self.control is not None:
            self.control.start()
            log.info("OSC control on %s:%d", *self.control.address[:2])
        log.info(
            "listening on %r, playing on %r (%s backend, model %s, %s, clock %s)",
            "Ostinato In" if self.config.in_port is None else self.config.in_port,
            "Ostinato Out" if self.config.out_port is None else self.config.out_port,
            self.backend, self.config.model_dir, self.engine.device, self.config.clock,
        )  # fmt: skip

    def poll(self) -> bool:
        """Called every ~100 ms by the main thread: the no-clock fallback. False when the
        note sender is gone (nothing can play: the daemon exits for a restart)."""
        if not self.scheduler.alive:
            log.error("exiting: without its note sender the daemon cannot play")
            return False
        clock = self.clock
        waited = time.perf_counter() - self._started_at > NO_CLOCK_AFTER_S
        if not waited or clock.source != "none" or self._waiting_said:
            return True
        heard = clock.bpm
        if self.config.clock == "auto" and heard is None:
            log.warning(
                "no MIDI clock seen on the input: playing at the internal tempo of %g BPM "
                "(send MIDI clock to follow the DAW)", self.config.bpm,
            )  # fmt: skip
            clock.start_internal(self.now(), self.config.bpm)
        elif heard is not None:
            self._waiting_said = True
            log.info("MIDI clock at %.1f BPM but no Start or Song Position yet: the bar lines "
                     "are not known, waiting for the DAW to start", heard)  # fmt: skip
        elif self.config.clock == "midi":
            self._waiting_said = True
            log.info("waiting for MIDI clock and Start on the input (Ostinato plays only on "
                     "the DAW's clock; --clock auto plays at --bpm without one)")  # fmt: skip
        return True

    def shutdown(self) -> None:
        self._stop.set()
        if self.control is not None:
            self.control.close()
        self.session.stop()
        self.scheduler.stop()  # releases every sounding note, CC 123 on used channels
        if self.ports is not None:
            self._input_thread.join(1.0)
            self.ports.close()
        if self.config.stats_json is not None:
            self.config.stats_json.write_text(json.dumps(self.stats()))
        s = self.scheduler.stats
        log.info("stopped: %d notes sent, %d deadline misses, %d late wake-ups, %d bad "
                 "messages dropped, %d stray clock bytes ignored", s.sent_notes,
                 s.deadline_misses, s.late_wakeups, self.garbage,
                 self.clock.rejected_ticks)  # fmt: skip


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
