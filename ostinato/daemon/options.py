"""What the daemon is started with: :class:`DaemonConfig`, made by ``ostinato run`` from the
settings schema (defaults, the config file, the options given), read by the daemon's pieces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ostinato.config import CcMap
from ostinato.daemon.transport import CLOCK_TIMEOUT_S
from ostinato.settings import SETTINGS, GenerationSettings


@dataclass
class DaemonConfig:
    model_dir: Path
    backend: str | None = None
    in_port: str | None = None
    out_port: str | None = None
    clock: str = "midi"  # "midi" (only the DAW's clock), "link", "auto" (see daemon.py), "internal"
    clock_timeout_s: float = CLOCK_TIMEOUT_S  # MIDI clock: no tick this long ends the epoch
    link_start_stop: bool = True  # Link: play while the session plays (off: always)
    bpm: float = 120.0
    beats_per_bar: float = 4.0
    meter: tuple[int, int] | None = None  # (n, d); None: n/4 or n/8 from beats_per_bar
    device: str = "auto"
    context: int | None = None  # tokens the model attends to; None: the card's context
    latency_ms: float = 0.0
    rt_priority: int = 5  # SCHED_FIFO priority of the sender (JACK's default: 10); 0 = off
    lookahead_ms: float = 250.0
    client_name: str = "ostinato"
    stats_json: Path | None = None  # written at shutdown: timing of every note sent
    stats_logs: bool = True  # with stats_json: every note and tick too (off: totals only)
    record: Path | str | None = SETTINGS["record"].default  # sessions folder; None: none
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    osc_host: str = "127.0.0.1"
    osc_port: int | None = 9000  # None: no OSC control
    osc_allow_remote: bool = False  # needed to bind anything but loopback
    config_path: Path | None = None  # where learned MIDI CCs are saved ([cc] table)
    cc_map: CcMap = field(default_factory=dict)  # (channel or None, CC number) → setting
