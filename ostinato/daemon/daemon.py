"""``ostinato run``: the daemon's pieces wired together, its life cycle, and a clean exit.

:class:`Daemon` makes the pieces and connects them: the engine, the clock, the recorder, the
note sender (:class:`~ostinato.daemon.sender.SenderProcess`, which owns the output port, and
for JACK the input port too) and the bar planner that plays; the input router
(:mod:`ostinato.daemon.input_router`: bytes → clock, recorder, CCs), MIDI learn
(:mod:`ostinato.daemon.cc_learner`), the telemetry (:mod:`ostinato.daemon.telemetry`: the
panel's state, the stats) and the OSC control server, which reaches them through the daemon.
It starts them, watches for a missing clock and a lost sender (:meth:`Daemon.poll`), and shuts
them down in order. A clock watch thread asks the clock every few ms whether the DAW's ticks
stopped coming (:meth:`~ostinato.daemon.clock.Clock.check_silence`); a gap in them releases
every sounding note and holds the sender's queue, and ticks back on the same tempo line play
it on (:meth:`Daemon._on_clock_gap`). SIGINT/SIGTERM stop everything and send note-offs for
every sounding note plus All Notes Off on every channel used.

Clock sources. ``clock = "midi"``: Ostinato plays only on the DAW's clock. ``"link"``: it follows
an Ableton Link session (:mod:`ostinato.daemon.link`; with ``link_start_stop`` only while the
session plays). ``"internal"``: always at ``bpm``, never listening to clock. ``"auto"`` takes
the first of these that is there, in this order: MIDI clock (a Start or Song Position, at any
time: from then on it drives the clock, Link is ignored); after 3 s without any clock byte, a
Link session with at least one other peer; else the internal tempo, until a Link peer shows
up (then the session takes over) or MIDI clock comes.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ostinato.channels import ChannelMap
from ostinato.daemon.cc_learner import CcLearner
from ostinato.daemon.clock import Clock, TransportEvent
from ostinato.daemon.collector import Collector
from ostinato.daemon.control import ControlServer
from ostinato.daemon.input_router import InputRouter
from ostinato.daemon.options import DaemonConfig
from ostinato.daemon.planner import BarPlanner
from ostinato.daemon.ports import MidiPorts, default_backend
from ostinato.daemon.recorder import Recorder
from ostinato.daemon.scheduler import input_priority
from ostinato.daemon.scheduling import NoteScheduler
from ostinato.daemon.sender import SenderProcess
from ostinato.daemon.session_file import SessionFile, session_path
from ostinato.daemon.takes import TakeError
from ostinato.daemon.telemetry import Telemetry
from ostinato.engine.engine import Engine, ModelError
from ostinato.settings import KNOBS, GenerationSettings

if TYPE_CHECKING:
    from ostinato.daemon.link import LinkFollower

log = logging.getLogger(__name__)

NO_CLOCK_AFTER_S = 3.0
CLOCK_WATCH_S = 0.005  # the clock watch asks whether the ticks stopped this often
RESUME_MARGIN_S = 0.002  # after a gap, notes due before the sender's next cycle + this: skipped
WEDGED_AFTER_S = 5.0  # the main thread not running this long: exit, to be restarted
SHUTDOWN_DEADLINE_S = 20.0


LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Daemon:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        if config.clock == "link":
            from ostinato.daemon.link import LinkError, available

            if not available():  # said before anything opens
                raise LinkError(
                    "--clock link needs the Python package aalink: "
                    "pip install 'ostinato[link]' (aalink, GPL-licensed)"
                )
        self.engine = Engine(config.model_dir, device=config.device, window=config.context)
        trained = self.engine.card["window"]
        if config.context is not None and config.context > trained:
            raise ModelError(
                f"context {config.context} is longer than the {trained} tokens the model was "
                "trained on"
            )
        self.meter = self.engine.vocab.check_meter(config.meter or config.beats_per_bar)
        if not self.engine.vocab.has_meters and self.meter != (4, 4):
            log.warning("this model has no time-signature tokens and learned only 4/4: a bar "
                        "of %d/%d is played as a 4/4 bar cut short", *self.meter)  # fmt: skip
        self.backend = config.backend or default_backend()
        jack = self.backend == "jack"
        # JACK stamps every event with its own frame: the clock can tell a stray byte
        self.clock = Clock(bpm=config.bpm, exact_stamps=jack, timeout_s=config.clock_timeout_s)
        self.recorder = Recorder(beats_per_bar=config.beats_per_bar)
        # The output port belongs to the sender process (see sender.py for why); it opens
        # first, so the input is read from the moment it exists. For JACK it owns the input
        # port too, and its process callback stamps each event with its frame.
        sender = SenderProcess(
            self.clock.snapshot, self.backend, config.out_port, config.client_name,
            latency_ms=config.latency_ms, rt_priority=config.rt_priority, with_input=jack,
            in_port=config.in_port,
        )  # fmt: skip
        sender.on_input_gap = self.clock.on_input_lost  # an xrun: ticks may be gone
        if jack:  # its SYNC reports say how far the input has been read
            sender.on_input_read = self.clock.input_read_until
        # its time line (now()) is the one of the input stamps and of the clock's map
        self.scheduler: NoteScheduler = sender
        # a cycle of the sender's: a note due sooner than that cannot go out on its frame
        self._cycle_s = (sender.blocksize or 0) / sender.samplerate if sender.samplerate else 0.0
        self.recording: SessionFile | None = None
        self.clock.gap_listeners.append(self._on_clock_gap)
        self._watch_stop = threading.Event()
        self._watch: threading.Thread | None = None
        self.ports: MidiPorts | None = None
        if not jack:
            try:
                self.ports = MidiPorts(config.backend, config.in_port,
                                       client_name=config.client_name,
                                       with_output=False)  # fmt: skip
            except Exception:
                sender.stop()
                raise
        self.clock.map_listeners.append(sender.push_tempo)
        self.planner = BarPlanner(
            self.engine, self.clock, self.scheduler, self.recorder, config.settings,
            config.beats_per_bar, config.lookahead_ms, config.latency_ms, now=sender.now,
            meter=self.meter,
        )  # fmt: skip
        self.planner.cycle_s = self._cycle_s  # re-plans take notes back before their cycle
        self._settings_lock = threading.Lock()  # OSC and CC changes apply one at a time
        self._route(config.settings)
        self.learner = CcLearner(config.cc_map, config.config_path, self.apply, self._changed,
                                 self.take)  # fmt: skip
        self.inputs = InputRouter(self.clock, self.recorder, self.planner.lock,
                                  self.learner.on_cc)  # fmt: skip
        self.inputs.midi_clock = config.clock != "link"
        self.telemetry = Telemetry(config, self.backend, self.engine, self.clock, self.recorder,
                                   self.planner, self.scheduler, self.inputs,
                                   self.learner)  # fmt: skip
        self.collector = self.telemetry.collector = Collector()
        if config.stats_json is not None and config.stats_logs:
            sender.on_note_sent = self.telemetry.note_sent
            self.inputs.on_note = self.telemetry.heard_note
            self.inputs.on_tick = self.telemetry.heard_tick
        sender.on_note_dropped = self.telemetry.note_dropped
        if config.record is not None:
            self._record(Path(config.record).expanduser(), sender)
        self._waiting_said = False
        self._started_at = time.perf_counter()
        self.link = self._make_link(config, sender)
        self.telemetry.link = self.link
        self.control: ControlServer | None = None
        if config.osc_port is not None:
            self.control = self._open_control(config.osc_port)
        # Input is handled from now on (JACK: the sender's reports; what came before is
        # dropped): clock ticks left queued in rtmidi while the model warms up would come out
        # as one backlog whose arrival times can only be estimated afterwards, an estimate
        # later polls correct by up to a tick, which reads as a duplicate tick and leaves the
        # beat count one behind.
        if self.ports is not None:
            self.inputs.poll(self.ports, input_priority(config.rt_priority))
        else:
            sender.on_input = self.inputs.on_input

    def _make_link(self, config: DaemonConfig, sender: SenderProcess) -> LinkFollower | None:
        """The Ableton Link peer for clock = link or auto (it joins in start)."""
        if config.clock not in ("link", "auto"):
            return None
        from ostinato.daemon import link  # aalink itself only loads when the peer starts

        if not link.available():
            log.warning("aalink is not installed: clock auto without Ableton Link")
            return None
        return link.LinkFollower(self.clock, sender.now, config.beats_per_bar, config.bpm,
                                 start_stop=config.link_start_stop,
                                 engaged=config.clock == "link")  # fmt: skip

    def _record(self, folder: Path, sender: SenderProcess) -> None:
        """Every note heard and played, the tempo and the markers, to a MIDI file."""
        rec = SessionFile(session_path(folder),
                          lambda channel: self.recorder.channel_programs.get(channel, 0),
                          self.config.beats_per_bar, self.config.bpm)  # fmt: skip
        self.recording = self.telemetry.recording = rec
        self.clock.map_listeners.append(
            lambda tempo: rec.tempo(tempo.anchor_time, tempo.bpm) if tempo else None
        )
        self.clock.listeners.append(self._mark_transport)
        self.inputs.on_played = self._heard
        sender.on_note_queued = rec.queued
        stats_hook = sender.on_note_sent

        def sent(due: float, when: float, channel: int, pitch: int, velocity: int,
                 note_id: int) -> None:  # fmt: skip
            rec.played(due, channel, pitch, velocity, note_id)
            if stats_hook is not None:
                stats_hook(due, when, channel, pitch, velocity, note_id)

        sender.on_note_sent = sent
        self.planner.markers.append(self._mark_beat)

    def _heard(self, t: float, data: list[int]) -> None:
        assert self.recording is not None
        if data[0] & 0xF0 == 0xB0:
            self.recording.all_notes_off(t, data[0] & 0x0F)
        else:
            self.recording.heard(t, data)

    def _mark_transport(self, event) -> None:
        assert self.recording is not None
        bar = int(event.beat // self.config.beats_per_bar) + 1
        if event.kind == "stop":
            self.recording.stopped(event.time)
            text = "stop"
        elif event.kind == "jump":
            text = f"jump to bar {bar}" + (" (loop)" if self.clock.loop else "")
        else:
            text = f"{event.kind} at bar {bar}"
        self.recording.marker(event.time, text)

    def _on_clock_gap(self, event: TransportEvent) -> None:
        """The clock's gap listener (under its lock; the clock watch's thread for a suspend,
        the input thread for a resume). Suspend: every sounding note is released, the queue
        waits. Resume: the queue plays on from the first note the sender can still play on its
        frame; those due in the gap, or before the sender's next cycle, are skipped (never a
        note off the grid). The epoch is the same: what the session prepared stays."""
        if event.kind == "suspend":
            self.scheduler.hold()
        else:
            beat = event.beat
            tempo = self.clock.snapshot()
            if tempo is not None:
                ready = self.scheduler.now() + self._cycle_s + RESUME_MARGIN_S
                beat = max(beat, tempo.beat_at(ready))
            self.scheduler.jump(beat, beat, True)
        if self.recording is not None:
            bar = int(event.beat // self.config.beats_per_bar) + 1
            text = "clock lost" if event.kind == "suspend" else f"clock back at bar {bar}"
            self.recording.marker(event.time, text)

    def _watch_clock(self) -> None:
        """The clock watch thread: a gap in the DAW's ticks is seen within CLOCK_WATCH_S,
        whatever the other threads are busy with."""
        while not self._watch_stop.wait(CLOCK_WATCH_S):
            try:
                self.clock.check_silence(self.scheduler.now())
            except Exception:  # the watch must go on
                log.exception("error watching the clock")

    def _mark_beat(self, beat: float, text: str) -> None:
        assert self.recording is not None
        tempo = self.clock.snapshot()
        self.recording.marker(tempo.time_at(beat) if tempo else self.scheduler.now(), text)

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

    def _changed(self) -> None:
        """Something the panel shows changed: subscribers get the new state."""
        if self.control is not None:
            self.control.changed()

    def apply(self, **changes) -> None:
        """Change settings (validated; ValueError changes nothing). The session reads the
        new object at its next bar, except ``loop_bars``: the loop follows it at once (under
        the session's lock, for the take actions); the real-time path never waits for this
        (it runs in the sender, on lock-free rings). Knob settings
        (a slider dragged, a CC turned) log at debug level, the rest at info."""
        with self._settings_lock:
            self.planner.settings = self.planner.settings.replace(**changes)
            if {"out_channels", "in_channels", "program_change"} & changes.keys():
                self._route(self.planner.settings)
            if "loop_bars" in changes:
                self.planner.follow_loop_setting()
        quiet = all(name in KNOBS for name in changes)
        (log.debug if quiet else log.info)(
            "settings: %s", ", ".join(f"{k}={v}" for k, v in changes.items())
        )
        self._changed()

    def _route(self, settings: GenerationSettings) -> None:
        """The channel maps to the sender (per note) and the recorder (per note heard)."""
        channels = ChannelMap(settings.out_channels or None, settings.in_channels or None)
        self.scheduler.set_channels(channels, settings.program_change)
        with self.planner.lock:
            self.recorder.channel_programs = channels.input_programs()

    def panic(self) -> None:
        self.scheduler.panic()
        log.info("panic: every note released")

    def take(self, action: str, on: bool = True) -> str:
        """A take action (OSC thread, or the input thread for a learned button):
        ``regenerate``, ``keep`` (``on`` False: release every kept bar) or ``undo``. Returns
        what was done, in words; TakeError (logged) when there is nothing to act on."""
        session = self.planner
        try:
            if action == "regenerate":
                done = session.regenerate()
            elif action == "keep":
                done = session.keep(on)
            elif action == "undo":
                done = session.undo()
            else:
                raise ValueError(f"no take action {action!r}")
        except TakeError as exc:
            log.info("%s: %s", action, exc)
            raise
        self._changed()
        return done

    # what the control server asks of the daemon
    def learn(self, setting: str) -> None:
        self.learner.learn(setting)

    def unlearn(self, setting: str) -> None:
        self.learner.unlearn(setting)

    def state(self) -> dict:
        return self.telemetry.state()

    def heartbeat(self) -> tuple:
        return self.telemetry.heartbeat()

    def roll(self, bars: int) -> tuple[float, float, list[tuple[float, float, int, bool]]]:
        return self.telemetry.roll(bars)

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.planner.warm_up()
        self.collector.start()  # the collector's long walks kept out of playing time
        self._started_at = time.perf_counter()
        if self.config.clock == "internal":
            self.clock.start_internal(self.scheduler.now() + 0.2, self.config.bpm)
        if self.link is not None:
            self.link.start()  # joins: from here on this machine is a peer on the network
        self.scheduler.start()
        if self.config.clock in ("midi", "auto"):
            self._watch = threading.Thread(target=self._watch_clock, name="ostinato-clock-watch",
                                           daemon=True)  # fmt: skip
            self._watch.start()
        if self.recording is not None:
            self.recording.start()
            log.info("recording the session to %s", self.recording.path)
        self.planner.start()
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
        self.collector.poll(self.clock.running, time.monotonic())
        clock = self.clock
        waited = time.perf_counter() - self._started_at > NO_CLOCK_AFTER_S
        if self.link is not None and self._poll_link(waited):
            return True
        if not waited or clock.source != "none" or self._waiting_said:
            return True
        heard = clock.bpm
        if self.config.clock == "auto" and heard is None:
            log.warning(
                "no MIDI clock seen on the input: playing at the internal tempo of %g BPM "
                "(send MIDI clock to follow the DAW)", self.config.bpm,
            )  # fmt: skip
            clock.start_internal(self.scheduler.now(), self.config.bpm)
        elif heard is not None:
            self._waiting_said = True
            log.info("MIDI clock at %.1f BPM but no Start or Song Position yet: the bar lines "
                     "are not known, waiting for the DAW to start", heard)  # fmt: skip
        elif self.config.clock == "midi":
            self._waiting_said = True
            log.info("waiting for MIDI clock and Start on the input (Ostinato plays only on "
                     "the DAW's clock; --clock auto plays at --bpm without one)")  # fmt: skip
        return True

    def _poll_link(self, waited: bool) -> bool:
        """Link's part of the fallback; True when it has said all there is to say."""
        link, clock = self.link, self.clock
        assert link is not None
        if self.config.clock == "link":
            if waited and not clock.position_known and not self._waiting_said:
                self._waiting_said = True
                if link.peers == 0:
                    log.info("Ableton Link: no other peer yet, waiting for one to start the "
                             "session (link_start_stop = off plays at once)")  # fmt: skip
                else:
                    log.info("Ableton Link: waiting for the session to start playing (a "
                             "peer with start/stop sync; link_start_stop = off plays at "
                             "once)")  # fmt: skip
            return True
        # auto: a session with peers, unless MIDI clock is (or was) there
        midi = clock.source == "midi" or clock.follower.locked
        if waited and not link.engaged and not midi and link.peers > 0:
            log.info("Ableton Link: following the session (%d other peer%s; no MIDI clock)",
                     link.peers, "" if link.peers == 1 else "s")  # fmt: skip
            link.engage()
        return link.engaged

    def shutdown(self) -> None:
        try:
            self._shut_down()
        finally:
            self.collector.close()  # the collector's thresholds as they were

    def _shut_down(self) -> None:
        if self.link is not None:
            self.link.close()  # leaves the session first: no transport change while stopping
        self.inputs.close()  # the input worker (rtmidi); JACK's input ends with the sender
        self._watch_stop.set()
        if self._watch is not None:
            self._watch.join(1.0)
        if self.control is not None:
            self.control.close()
        self.planner.stop()
        self.scheduler.stop()  # releases every sounding note, CC 123 on used channels
        if self.ports is not None:
            self.ports.close()
        if self.recording is not None:
            self.recording.close(self.scheduler.now())
        if self.config.stats_json is not None:
            self.config.stats_json.write_text(json.dumps(self.telemetry.stats()))
        s = self.scheduler.stats
        log.info("stopped: %d notes sent, %d deadline misses, %d late wake-ups, %d bad "
                 "messages dropped, %d stray clock bytes ignored", s.sent_notes,
                 s.deadline_misses, s.late_wakeups, self.inputs.garbage,
                 self.clock.rejected_ticks)  # fmt: skip


SWITCH_INTERVAL_S = 0.0001


def run_daemon(config: DaemonConfig) -> int:
    # Let the input thread take the GIL within a tenth of a millisecond of asking, instead of
    # the default 5 ms, while the generation thread runs Python code: a tick's new map, a Stop
    # or a panic reaches the sender process that much sooner. Each write to the sender gives
    # the lock away and takes it back, so a tick waits about this long per write (measured
    # in the soak: a tick's listeners 2.3 ms at most at 0.5 ms).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
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
