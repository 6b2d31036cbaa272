"""What the running daemon tells about itself.

- For the panel (OSC, :mod:`ostinato.daemon.control`): :meth:`Telemetry.state` (every setting,
  the transport, the engine, the takes, as flat key → value), :meth:`~Telemetry.heartbeat` and
  :meth:`~Telemetry.roll` (the notes heard and played in the last bars).
- For ``stats_json`` (written at shutdown; ``ostinato bench --realtime`` reads it):
  :meth:`~Telemetry.stats`, with the logs kept while playing when it is asked for: the notes
  heard and the clock ticks (from the input router), the notes sent and dropped (from the
  scheduler). Each log keeps at most ``LOG_LIMIT`` entries.
- In the log: a dropped note is said once per bar.
"""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING

import numpy as np

from ostinato.channels import format_map
from ostinato.config import format_cc_map
from ostinato.daemon.cc_learner import CcLearner
from ostinato.daemon.clock import Clock
from ostinato.daemon.collector import GC_PAUSES, Collector
from ostinato.daemon.input_router import InputRouter
from ostinato.daemon.planner import BarPlanner
from ostinato.daemon.recorder import HUMAN, Recorder
from ostinato.daemon.scheduling import NoteScheduler
from ostinato.daemon.session_file import SessionFile
from ostinato.engine.engine import Engine
from ostinato.settings import format_programs

if TYPE_CHECKING:
    from ostinato.daemon.link import LinkFollower
    from ostinato.daemon.options import DaemonConfig

log = logging.getLogger(__name__)

LOG_LIMIT = 100_000


class Telemetry:
    """Reads the daemon's pieces; ``backend``: the MIDI backend in use."""

    def __init__(
        self,
        config: DaemonConfig,
        backend: str,
        engine: Engine,
        clock: Clock,
        recorder: Recorder,
        planner: BarPlanner,
        scheduler: NoteScheduler,
        inputs: InputRouter,
        learner: CcLearner,
    ) -> None:
        self.config = config
        self.backend = backend
        self.engine, self.clock, self.recorder, self.planner = engine, clock, recorder, planner
        self.scheduler, self.inputs, self.learner = scheduler, inputs, learner
        self.keep_logs = config.stats_json is not None and config.stats_logs
        self.input_log: list[tuple[float, list[int]]] = []  # beat and bytes of notes heard
        self.tick_log: list[float] = []  # arrival time of every clock tick
        self.sent_log: list[tuple[float, float, float, int]] = []  # beat, due, sent, note
        self.drop_log: list[tuple[float, float, float, bool]] = []  # beat, due, when, why
        self._last_drop_bar = -1
        self.link: LinkFollower | None = None  # the Ableton Link peer (clock = link or auto)
        self.recording: SessionFile | None = None  # the session file, when recording
        self.collector: Collector | None = None  # the garbage collector's keeper

    # -- logs (input thread, reports thread) -----------------------------------------------
    def heard_note(self, beat: float, data: list[int]) -> None:
        if len(self.input_log) < LOG_LIMIT:
            self.input_log.append((beat, list(data)))

    def heard_tick(self, t: float) -> None:
        if len(self.tick_log) < LOG_LIMIT:
            self.tick_log.append(t)

    def note_sent(
        self, due: float, sent: float, channel: int, pitch: int, velocity: int, note_id: int
    ) -> None:
        tempo = self.clock.snapshot()
        beat = tempo.beat_at(due) if tempo else float("nan")
        self.sent_log.append((beat, due, sent, pitch))

    def note_dropped(self, due: float, when: float, note_id: int, handed_over_late: bool) -> None:
        """A note-on the sender dropped: said once per bar in the log (reports thread)."""
        tempo = self.clock.snapshot()
        beat = tempo.beat_at(due) if tempo else float("nan")
        if self.keep_logs and len(self.drop_log) < LOG_LIMIT:
            self.drop_log.append((beat, due, when, handed_over_late))
        bar = int(beat // self.config.beats_per_bar) if tempo else -1
        if bar != self._last_drop_bar:
            self._last_drop_bar = bar
            log.warning(
                "bar %d: a note %.0f ms late was dropped (%s)", bar + 1, (when - due) * 1000,
                "generated after its time" if handed_over_late else "the sender woke late",
            )  # fmt: skip

    # -- the panel (OSC thread) ------------------------------------------------------------
    def state(self) -> dict:
        """Everything a panel shows, as flat key → value."""
        s = self.planner.settings
        tempo = self.clock.snapshot()
        beat = self.clock.beat_now(self.scheduler.now())
        bar_ms = list(self.planner.bar_ms)[-64:]
        clock = self.clock
        heard_bpm = clock.bpm
        loop = self.planner.loop
        stats = self.scheduler.stats
        state = {
            "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
            "repetition_penalty": s.repetition_penalty, "mode": s.mode,
            "bars": "auto" if s.bars is None else s.bars,
            "phrase_bars": s.phrase_bars, "programs": format_programs(s.programs),
            "seed": s.seed, "key_lock": int(s.key_lock),
            "style": "auto" if s.style is None else s.style, "guidance": s.guidance,
            "density": s.density, "commit": "bar" if s.commit is None else s.commit,
            "style_tokens": int(self.planner.engine.vocab.has_styles),
            "out_channels": format_map(s.out_channels), "in_channels": format_map(s.in_channels),
            "program_change": int(s.program_change),
            "variation": s.variation, "fill": int(s.fill),
            "loop_bars": "auto" if s.loop_bars is None else s.loop_bars,
            "loop_length": loop.bars if loop else 0, "loop_first_bar": loop.start if loop else -1,
            "loop_from": loop.source if loop else "", "fallbacks": self.planner.fallbacks,
            "running": clock.running, "clock": clock.source,
            "link_peers": self.link.peers if self.link is not None else 0,
            "bpm": round(heard_bpm if heard_bpm else tempo.bpm if tempo else self.config.bpm, 3),
            "position_known": int(clock.position_known),
            "loop_start": -1.0 if clock.loop is None else clock.loop[0],
            "loop_end": -1.0 if clock.loop is None else clock.loop[1],
            "loop_passes": clock.loop_passes, "jumps": clock.jumps,
            "rejected_ticks": clock.rejected_ticks,
            "clock_gaps": clock.gaps, "suspended": int(clock.suspended),
            "ignored_messages": self.inputs.ignored,
            "input_lost": stats.input_lost,
            "input_gaps": clock.input_gaps,  # times the backend said MIDI input was lost
            "beats_per_bar": self.config.beats_per_bar,
            "beat": -1.0 if beat is None else round(beat, 3),
            "bar_ms_p99": round(float(np.percentile(bar_ms, 99)), 2) if bar_ms else 0.0,
            "lookahead_ms": round(self.planner.lookahead_s * 1000, 1),
            "deadline_misses": stats.deadline_misses,
            "late_wakeups": stats.late_wakeups,
            "notes_sent": stats.sent_notes,
            "bad_messages": self.inputs.garbage,
            "backend": self.backend,
            "in_port": self.config.in_port or "Ostinato In",
            "out_port": self.config.out_port or "Ostinato Out",
            "device": self.engine.device, "model": str(self.config.model_dir),
            "learning": self.learner.learning or "",
            "cc": format_cc_map(self.learner.cc_map),
            "kept": self.planner.kept.text(), "takes": self.planner.takes,
            "last_take": self.planner.last_take,
        }  # fmt: skip
        return state

    def heartbeat(self) -> tuple:
        tempo = self.clock.snapshot()
        beat = self.clock.beat_now(self.scheduler.now())
        bpb = self.config.beats_per_bar
        bar_ms = self.planner.bar_ms[-1] if self.planner.bar_ms else 0.0
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
        beat = self.clock.beat_now(self.scheduler.now())
        with self.planner.lock:
            notes = list(self.recorder.notes)
        now = beat if beat is not None else (notes[-1].start_beats if notes else 0.0)
        since = now - bars * self.config.beats_per_bar
        rows = [(n.start_beats, n.duration_beats, n.pitch, n.source != HUMAN)
                for n in notes if n.start_beats >= since]  # fmt: skip
        return self.config.beats_per_bar, now, rows

    # -- stats_json ------------------------------------------------------------------------
    def stats(self) -> dict:
        s = self.scheduler.stats
        return {
            "notes_sent": s.sent_notes,
            "deadline_misses": s.deadline_misses,
            "late_wakeups": s.late_wakeups,
            "sender_realtime": self.scheduler.realtime,
            # the thread reading the clock: rtmidi's poller, or the JACK sender's reports
            "input_realtime": self.inputs.realtime
            if self.inputs.realtime is not None
            else getattr(self.scheduler, "input_realtime", None),
            "sender_pid": self.scheduler.pid,
            "lost_reports": s.lost_reports,
            "dropped": [
                {"beat": b, "due": d, "at": t, "handed_over_late": late}
                for b, d, t, late in self.drop_log
            ],
            "gc_frozen_objects": gc.get_freeze_count(),
            "gc": {
                **GC_PAUSES.stats(),
                **(self.collector.stats() if self.collector is not None else {}),
            },
            "lateness_ms": s.lateness_ms,
            "bar_ms": list(self.planner.bar_ms),
            "bar_margin_ms": list(self.planner.bar_margin_ms),
            "bars": [
                {
                    "bar": b,
                    "hand_over_ms": h,
                    "generate_ms": g,
                    "notes": n,
                    "margin_ms": m,
                    "first_note_margin_ms": f,
                }
                for b, h, g, n, m, f in self.planner.bar_log
            ],
            "bars_generated": self.planner.bars_generated,
            "fallbacks": self.planner.fallbacks,
            "replans": {  # re-plans within the bar (the commit setting)
                "applied": self.planner.replans.applied,
                "late": self.planner.replans.late,
                "skipped": self.planner.replans.skipped,
                "unchanged": self.planner.replans.unchanged,
                "partial": self.planner.replans.partial,
                "ms": list(self.planner.replans.ms),
            },
            "lookahead_ms": self.planner.lookahead_s * 1000,
            "bad_messages": self.inputs.garbage,
            "ignored_messages": self.inputs.ignored,
            "clock": {
                "bpm": self.clock.bpm,
                "ticks_counted": self.clock.follower.count,
                "rejected_ticks": self.clock.rejected_ticks,
                "jumps": self.clock.jumps,
                "jumps_followed": self.planner.jumps_followed,
                "loop": self.clock.loop,
                "loop_passes": self.clock.loop_passes,
                "position_known": self.clock.position_known,
                "input_gaps": self.clock.input_gaps,
                "gaps": self.clock.gaps,  # ticks that stopped without a Stop (suspended)
                "timeouts": self.clock.timeouts,  # of those, ended by clock_timeout_s
                "listener_ms_max": self.clock.listener_ms_max,
                "listener_max_at": self.clock.listener_max_at,  # time.monotonic()
                "listener_max_split": self.clock.listener_max_split,  # the machine's or ours
            },
            "recording": None
            if self.recording is None
            else {
                "writes": self.recording.writes,
                "write_ms_last": self.recording.write_ms,
                "write_ms_max": self.recording.write_ms_max,
            },
            "engine": {  # positions renumbered (between bars, or inside one)
                "renumbered": self.engine.renumbered,
                "renumbered_inside_bar": self.engine.renumbered - self.engine.renumbered_ahead,
            },
            "link": self.link.stats() if self.link is not None else None,
            "skipped_frames": s.skipped_frames,
            "input_lost": s.input_lost,
            "clock_ticks": self.tick_log,
            "notes_heard": [{"beat": b, "message": m} for b, m in self.input_log],
            "notes": [{"beat": b, "due": d, "sent": t, "pitch": p} for b, d, t, p in self.sent_log],
        }
