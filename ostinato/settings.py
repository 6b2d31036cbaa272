"""Every setting the daemon and the generators take, described once: its type, range or
choices, unit, help text, config-file key, CLI flag and (for the ones that change while
playing) OSC address. The CLI (`ostinato.cli`), the config file (`ostinato.config`), OSC
(`ostinato.daemon.control`), the panel and `ostinato doctor` all validate through
:meth:`Setting.check`, so a value is refused with the same words wherever it comes from:
``top_k must be a whole number ≥ 0, got 2.0``.

Pure Python, imported by the daemon and the panel alike (no I/O, no threads). The schema is
a few frozen dataclasses and one small validator rather than a validation library: the
daemon starts with it on every run, the rules fit in a page, and the messages are ours.

Where a value comes from decides only how it is read, never what is valid:

- a config file or Python (:meth:`Setting.check`): strict types. ``top_k = 2.0`` and
  ``bpm = "120"`` are refused; an int is a fine float.
- the command line (:meth:`Setting.from_text`): text parsed as the type.
- OSC (:meth:`Setting.from_osc`): what OSC controllers send. Many send floats only, so a
  whole float is a fine int; 1/0 or on/off is a bool; ``"none"`` is no seed and ``"auto"``
  the musician's own instruments (OSC has no null). A setting spelled ``"bar"`` when None
  (``commit``) also takes its number as text, ``"2"``, read as the command line reads it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ostinato.channels import parse_in, parse_out
from ostinato.daemon.transport import CLOCK_TIMEOUT_S
from ostinato.model.style import STYLES

if TYPE_CHECKING:
    from ostinato.model.sampling import SamplingSettings

MODES = ("continue", "jam", "loop")
BACKENDS = ("alsa", "jack", "coremidi", "winmm")
CLOCKS = ("midi", "link", "auto", "internal")
DEVICES = ("auto", "cuda", "cpu")
OSC_PREFIX = "/ostinato"
DRUMS = -1  # the program number that stands for the drum kit (GM channel 10)

KINDS = (
    "float",
    "int",
    "bool",
    "choice",
    "str",
    "path",
    "programs",
    "seed",
    "meter",
    "out_channels",
    "in_channels",
)


class SettingError(ValueError):
    """A value or key that no setting takes; the message names the key and says why."""


@dataclass(frozen=True)
class Knob:
    """The useful range a MIDI CC drives: CC 0..127 maps linearly onto lo..hi."""

    lo: float
    hi: float
    integer: bool = False

    def value(self, cc_value: int) -> float | int:
        x = self.lo + (self.hi - self.lo) * cc_value / 127.0
        return round(x) if self.integer else round(x, 3)


@dataclass(frozen=True)
class Setting:
    """One setting. ``name`` is its config-file key; ``live`` settings have the OSC address
    ``/ostinato/<name>`` and change while the daemon plays; ``flag`` is its CLI option."""

    name: str
    kind: str
    default: Any
    help: str
    group: str  # "generation" (the model's sampling and the session) or "daemon"
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is not allowed (top_p > 0)
    choices: tuple[str, ...] = ()
    unit: str = ""
    optional: bool = False  # None is a value (leave the key out of the file for it)
    live: bool = False
    flag: str | None = None  # default: --name-with-dashes
    knob: Knob | None = None
    hint: str = ""  # said after a refusal of a string where the file needs something else
    auto: bool = False  # None is spelled "auto" (in the file, on the command line, by OSC)
    off: bool = False  # None is spelled "off" (or false in the file): the thing is not done
    bar: bool = False  # None is spelled "bar": once per bar, the whole bar (commit)
    step: float | None = None  # a number must be a whole multiple of this (commit: 0.5 beat)

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind
        if self.flag is None:
            object.__setattr__(self, "flag", "--" + self.name.replace("_", "-"))

    @property
    def osc_address(self) -> str | None:
        return f"{OSC_PREFIX}/{self.name}" if self.live else None

    # -- what it takes, in words -------------------------------------------------------------
    def expects(self, osc: bool = False) -> str:
        """What a valid value is, as said after "must be"."""
        unit = f" {self.unit}" if self.unit else ""
        if self.auto:
            return dataclasses.replace(self, auto=False).expects(osc) + " or auto"
        if self.off:
            return dataclasses.replace(self, off=False).expects(osc) + " or off"
        if self.bar:
            return "bar or " + dataclasses.replace(self, bar=False).expects(osc)
        if self.kind in ("float", "int", "seed"):
            what = "a number" if self.kind == "float" else "a whole number"
            if self.lo is not None and self.hi is not None:
                if self.lo_open:
                    text = f"{what} greater than {self.lo:g} and at most {self.hi:g}{unit}"
                else:
                    text = f"{what} from {self.lo:g} to {self.hi:g}{unit}"
            else:
                text = f"{what} ≥ {self.lo:g}{unit}"
            return text + (f", a multiple of {self.step:g}" if self.step else "")
        if self.kind == "bool":
            return "1 or 0 (on or off)" if osc else "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "programs":
            if osc:
                return "'auto', a list like 'drums,33', or GM program numbers (-1 = drums)"
            return "a list of GM programs 0 to 127 or -1 (drums), e.g. [-1, 33]"
        if self.kind == "meter":
            return "a meter like 4/4, 3/4, 6/8 or 7/8"
        instruments = "keys, guitar, bass, pad, lead, other, drums or a GM program 0-127"
        if self.kind == "out_channels":
            example = "'bass=2,drums=10'" if osc else "{ bass = 2, drums = 10 }"
            return f"instrument = channel 1-16 pairs like {example} ({instruments})"
        if self.kind == "in_channels":
            example = "'2=bass,10=drums'" if osc else '{ 2 = "bass", 10 = "drums" }'
            return f"channel 1-16 = instrument pairs like {example} ({instruments})"
        if self.kind == "path":
            return "a file or folder path (a string)"
        return "a string"

    def refuse(self, value: Any, osc: bool = False, why: str = "") -> SettingError:
        text = f"{self.name} must be {self.expects(osc)}, got {shown(value)}"
        if why:
            text += f" ({why})"
        elif isinstance(value, str) and not osc and self.hint:
            text += f" ({self.hint})"
        elif isinstance(value, str) and not osc and self.kind in ("float", "int", "seed", "bool"):
            try:
                self.check(self._read_text(value))
            except ValueError:
                pass
            else:
                bare = "true or false" if self.kind == "bool" else "it"
                text += f" (a string: write {bare} without quotes)"
        return SettingError(text)

    # -- reading -------------------------------------------------------------------------------
    def check(self, value: Any) -> Any:
        """A value from a config file or Python → the normalized value, or SettingError."""
        if value is None or (self.auto and isinstance(value, str) and is_auto(value)):
            if self.optional or self.auto or self.off or self.bar:
                return None
            raise self.refuse(value)
        if self.bar and isinstance(value, str) and is_word(value, "bar"):
            return None
        if self.off and (value is False or (isinstance(value, str) and is_word(value, "off"))):
            return None
        kind = self.kind
        if kind in ("float", "int", "seed"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.refuse(value)
            if kind != "float" and not isinstance(value, int):
                raise self.refuse(value)
            if not self._in_range(value) or not self._on_step(value):
                raise self.refuse(value)
            return float(value) if kind == "float" else int(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise self.refuse(value)
            return value
        if kind == "programs":
            return parse_programs(value, self)
        if kind in ("out_channels", "in_channels"):
            if isinstance(value, tuple):  # already a map (a setting's own value)
                value = dict(value)
            try:
                return (parse_out if kind == "out_channels" else parse_in)(value)
            except (ValueError, TypeError):
                raise self.refuse(value) from None
        if kind == "path":
            if isinstance(value, Path):
                return value
            if not isinstance(value, str) or not value:
                raise self.refuse(value)
            try:
                return Path(value).expanduser()
            except RuntimeError:  # "~name/…" for a user that does not exist
                raise self.refuse(value, why="no such user's home folder") from None
        if not isinstance(value, str):
            raise self.refuse(value)
        if kind == "choice" and value not in self.choices:
            suggestion = did_you_mean(value, self.choices)
            raise self.refuse(value, why=suggestion)
        if kind == "meter":
            try:
                parse_meter(value)
            except ValueError:
                raise self.refuse(value) from None
        return value

    def _in_range(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or value <= self.hi

    def _on_step(self, value: float) -> bool:
        return self.step is None or (value / self.step).is_integer()

    def from_text(self, text: str) -> Any:
        """A command-line value → the normalized value, or SettingError."""
        try:
            value = self._read_text(text)
        except ValueError:
            raise self.refuse(text) from None
        return value if self.kind == "programs" else self.check(value)

    def _read_text(self, text: str) -> Any:
        """Text → a value of the setting's type (not yet range-checked), or ValueError."""
        kind, word = self.kind, text.strip().lower()
        if (self.auto and word == "auto") or (self.off and word == "off"):
            return None
        if self.bar and word == "bar":
            return None
        if kind == "float":
            return float(text)
        if kind == "int" or (kind == "seed" and word not in ("none", "random")):
            return int(text)
        if kind == "seed":
            return None
        if kind == "bool":
            if word not in TRUE_WORDS + FALSE_WORDS:
                raise ValueError(text)
            return word in TRUE_WORDS
        if kind == "programs":
            return None if word in ("auto", "") else parse_programs(text, self)
        return text

    def from_osc(self, args: tuple) -> Any:
        """The arguments of an OSC message → the normalized value, or SettingError."""
        if self.kind == "programs":
            if len(args) == 1 and isinstance(args[0], str):
                word = args[0].strip().lower()
                return None if word in ("auto", "") else parse_programs(args[0], self, osc=True)
            if args and all(type(a) is int for a in args):
                return parse_programs(list(args), self, osc=True)
            raise self.refuse(args[0] if len(args) == 1 else list(args), osc=True)
        if len(args) != 1:
            raise SettingError(f"{self.name} takes one argument, got {len(args)}")
        (value,) = args
        kind = self.kind
        if self.auto and isinstance(value, str) and is_auto(value):
            return None
        if self.off and isinstance(value, str) and is_word(value, "off"):
            return None
        if self.bar and isinstance(value, str):  # "bar", or the number as text: "2"
            return self.from_text(value)
        if kind == "float" and type(value) in (int, float):
            value = round(float(value), 6)  # OSC floats are 32-bit: 0.55 comes as 0.550000011
        elif kind in ("int", "seed", "bool") and type(value) is float and value.is_integer():
            value = int(value)
        if kind == "seed":
            if isinstance(value, str) and value.strip().lower() in ("none", "random", ""):
                return None
            if type(value) is int and value < 0:
                return None  # -1: a new seed every bar
        if kind == "bool":
            if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
                return value.strip().lower() in TRUE_WORDS
            if type(value) is int and value in (0, 1):
                return bool(value)
            if not isinstance(value, bool):
                raise self.refuse(value, osc=True)
        return self.check(value)


def is_auto(text: str) -> bool:
    """``"auto"`` in any case, with any spaces around it (the None of an ``auto`` setting)."""
    return is_word(text, "auto")


def is_word(text: str, word: str) -> bool:
    return text.strip().lower() == word


TRUE_WORDS = ("1", "on", "true", "yes")
FALSE_WORDS = ("0", "off", "false", "no")


def shown(value: Any) -> str:
    """A value as the user wrote it: TOML's true/false, strings quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        value = list(value)
    return repr(value)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


# -- parsing shared by every source ------------------------------------------------------------
def parse_programs(value: Any, setting: Setting | None = None, osc: bool = False):
    """``"drums,33"`` or ``[-1, 33]`` → ``(-1, 33)``, sorted, each once."""
    setting = setting or SETTINGS["programs"]
    if isinstance(value, str):
        try:
            numbers = [DRUMS if p.strip().lower() == "drums" else int(p) for p in value.split(",")]
        except ValueError:
            raise setting.refuse(value, osc=osc) from None
    elif isinstance(value, list | tuple) and all(type(p) is int for p in value):
        numbers = list(value)
    else:
        raise setting.refuse(value, osc=osc)
    if not numbers or not all(DRUMS <= p <= 127 for p in numbers):
        raise setting.refuse(value, osc=osc)
    return tuple(sorted(set(numbers)))


def format_programs(programs: tuple[int, ...] | None) -> str:
    if programs is None:
        return "auto"
    return ",".join("drums" if p == DRUMS else str(p) for p in programs)


def format_commit(commit_beats: float | None) -> str:
    """The commit horizon as the command line and OSC take it: ``"bar"``, ``"0.5"``, ``"2"``."""
    return "bar" if commit_beats is None else f"{commit_beats:g}"


def parse_meter(text: str) -> float:
    """'4/4' → 4 beats, '3/4' → 3, '6/8' → 3, '7/8' → 3.5 (beats are quarter notes)."""
    try:
        num, den = (int(x) for x in text.split("/"))
    except ValueError as exc:
        raise ValueError(f"meter must look like 4/4 or 7/8, got {text!r}") from exc
    if num < 1 or den not in (2, 4, 8, 16) or not 1 <= num * 4 / den <= 16:
        raise ValueError(f"unsupported meter {text!r}")
    return num * 4 / den


def meter_pair(text: str) -> tuple[int, int]:
    """'6/8' → (6, 8): the meter as a time signature (checked like :func:`parse_meter`)."""
    parse_meter(text)
    num, den = (int(x) for x in text.split("/"))
    return (num, den)


# -- the schema --------------------------------------------------------------------------------
def _sessions_dir() -> Path:
    """Where sessions are recorded by default: $XDG_DATA_HOME/ostinato/sessions."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ostinato" / "sessions"


def _generation(name: str, kind: str, default: Any, help: str, **more: Any) -> Setting:
    return Setting(name, kind, default, help, "generation", live=True, **more)


def _daemon(name: str, kind: str, default: Any, help: str, **more: Any) -> Setting:
    return Setting(name, kind, default, help, "daemon", **more)


# fmt: off
SCHEMA: tuple[Setting, ...] = (
    _generation("temperature", "float", 0.2, "0 = greedy; low keeps the song, high is adventurous",
                lo=0.0, hi=5.0, knob=Knob(0.1, 2.0)),
    _generation("top_k", "int", 0, "sample among the k likeliest tokens (0 = off)", lo=0,
                knob=Knob(0, 64, integer=True)),
    _generation("top_p", "float", 0.95, "nucleus sampling mass (1 = off)", lo=0.0, hi=1.0,
                lo_open=True, knob=Knob(0.05, 1.0)),
    _generation("repetition_penalty", "float", 1.0, "> 1 discourages recent pitches (1 = off)",
                lo=1.0, hi=3.0, knob=Knob(1.0, 2.0)),
    _generation("mode", "choice", "continue", "continue (answer a phrase), jam (play along "
                "every bar on the programs) or loop (vary your loop)", choices=MODES),
    _generation("bars", "int", 4, "bars of answer in continue mode (auto: as long as the "
                "phrase)", lo=1, hi=64, unit="bars", knob=Knob(1, 16, integer=True), auto=True),
    _generation("variation", "float", 0.3, "how much each pass (loop) or answer (continue) "
                "changes: 0 = the previous pass note for note, 1 = free continuation",
                lo=0.0, hi=1.0, knob=Knob(0.0, 1.0)),
    _generation("loop_bars", "int", None, "loop length in bars (auto: from the DAW's loop "
                "jumps, or from the repetition in what you play)", lo=1, hi=64, unit="bars",
                knob=Knob(1, 16, integer=True), auto=True),
    _generation("fill", "bool", False, "play a fill (free variation) on the loop's last bar"),
    _generation("density", "float", 1.25, "the most notes a bar Ostinato plays may hold, as a "
                "multiple of the busiest bar you played lately; jam mode also keeps 0.6 × your "
                "mean bar (0 = neither limit)", lo=0.0, hi=8.0,
                knob=Knob(0.0, 4.0)),
    _generation("phrase_bars", "int", 2, "answer a phrase once it is this long, without "
                "waiting for a silent bar", lo=1, hi=64, unit="bars",
                knob=Knob(1, 8, integer=True)),
    _generation("programs", "programs", None, "instruments Ostinato plays, e.g. drums,33 (GM "
                "programs; drums = -1; unset: the ones the musician plays)", optional=True),
    _generation("out_channels", "out_channels", parse_out({}), "the MIDI channel of each "
                "instrument Ostinato plays (default keys 1, bass 2, pad 3, lead 4, guitar 5, "
                "other 6, drums 10; give only what changes)"),
    _generation("in_channels", "in_channels", parse_in({}), "the instrument the model hears on "
                "each input channel (default: the same channels; any other is keys)"),
    _generation("program_change", "bool", False, "send Bank Select and Program Change on each "
                "output channel before its instrument's first note (for a GM synth)"),
    _generation("seed", "seed", None, "a fixed random seed per bar (unset: a new one every "
                "bar)", lo=0, optional=True,
                hint="leave seed out of the file for a new seed every bar"),
    _generation("key_lock", "bool", True, "keep pitched notes to the key of the context plus "
                "the notes it used"),
    _generation("style", "choice", None, "the style the model is asked for (models trained "
                "with style tokens; auto: none, the model's own guess from the context)",
                choices=STYLES, auto=True),
    _generation("guidance", "float", 0.0, "classifier-free guidance towards the style (0 = "
                "off; > 0 runs the model twice per token: about twice the time per bar)",
                lo=0.0, hi=8.0),
    _generation("commit", "float", 1.0, "how often a bar's plan becomes final: bar (the "
                "whole bar, generated before it begins) or every N beats, re-planning the rest "
                "of the bar from what you played so far (the model runs again at each point)",
                lo=0.0, lo_open=True, hi=16.0, step=0.5, unit="beats", bar=True),
    _daemon("model", "path", None, "model folder (unset: the bundled model)", optional=True),
    _daemon("backend", "choice", None, "MIDI backend (unset: the platform's)",
            choices=BACKENDS, optional=True),
    _daemon("in_port", "str", None, "open this existing input port instead of a virtual one",
            optional=True, flag="--in"),
    _daemon("out_port", "str", None, "open this existing output port instead of a virtual one",
            optional=True, flag="--out"),
    _daemon("clock", "choice", "midi", "tempo source: midi (only the DAW's clock), link (an "
            "Ableton Link session), auto (MIDI clock, else a Link session with peers, else "
            "bpm), internal (bpm)", choices=CLOCKS),
    _daemon("clock_timeout_s", "float", CLOCK_TIMEOUT_S, "MIDI clock: no tick for this long "
            "while playing, and no Stop, ends the song (a shorter gap releases every note and "
            "plays on when the ticks come back on the same tempo)", lo=0.5, hi=60.0, unit="s"),
    _daemon("link_start_stop", "bool", True, "Link: play while the session plays (start/stop "
            "sync); off: play whenever the daemon runs"),
    _daemon("bpm", "float", 120.0, "internal tempo (Link: the tempo of a session Ostinato "
            "starts alone)", lo=20.0, hi=400.0, unit="BPM"),
    _daemon("meter", "meter", "4/4", "beats per bar: 4/4, 3/4, 6/8, 7/8 …"),
    _daemon("device", "choice", "auto", "where the model runs", choices=DEVICES),
    _daemon("context", "int", None, "tokens of what was played the model reads back (unset: "
            "the model's own choice, in its card; fewer: each note costs less time, at most "
            "its training window)", optional=True, lo=64, hi=65536, unit="tokens"),
    _daemon("latency_ms", "float", 0.0, "play this much earlier (negative: later), for a "
            "synth's latency", lo=-500.0, hi=500.0, unit="ms"),
    _daemon("lookahead_ms", "float", 250.0, "generate a bar this long before it begins, at "
            "first (it then adapts to the time a bar takes)", lo=30.0, hi=2000.0, unit="ms"),
    _daemon("rt_priority", "int", 5, "real-time (SCHED_FIFO) priority of the note sender, "
            "below JACK's 10 (0 = off)", lo=0, hi=98),
    _daemon("osc", "bool", True, "the OSC control server"),
    _daemon("osc_host", "str", "127.0.0.1", "OSC address to listen on"),
    _daemon("osc_port", "int", 9000, "OSC control port", lo=1, hi=65535),
    _daemon("osc_allow_remote", "bool", False, "allow osc_host to be reachable from other "
            "machines"),
    _daemon("record", "path", str(_sessions_dir()), "write every session to a multitrack MIDI "
            "file in this folder (off: none)", off=True),
    _daemon("stats_json", "path", None, "write timing statistics to this file on exit",
            optional=True),
    _daemon("stats_logs", "bool", True, "with stats_json: also every note sent and heard and "
            "every clock tick (off for long runs: the totals only)"),
)
# fmt: on
SETTINGS: dict[str, Setting] = {s.name: s for s in SCHEMA}
GENERATION = tuple(s.name for s in SCHEMA if s.group == "generation")
DAEMON = tuple(s.name for s in SCHEMA if s.group == "daemon")
LIVE = tuple(s.name for s in SCHEMA if s.live)
KNOBS: dict[str, Knob] = {s.name: s.knob for s in SCHEMA if s.knob is not None}
# Take actions (not settings): each an OSC address (/ostinato/regenerate …) and a trigger a
# MIDI button can be learned for (a CC value ≥ 64 after one below fires it once)
TRIGGERS = ("regenerate", "keep", "undo")
LEARNABLE = (*KNOBS, *TRIGGERS)  # what /ostinato/learn and the [cc] table take


def setting(name: str) -> Setting:
    """The setting called ``name``, or SettingError with a did-you-mean."""
    found = SETTINGS.get(name)
    if found is None:
        suggestion = did_you_mean(name, SETTINGS)
        raise SettingError(f"unknown setting {name!r}" + (f" ({suggestion})" if suggestion else ""))
    return found


def validate(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings by name (a config file's, or Python's) → normalized values. The first unknown
    key or bad value raises SettingError; nothing is half-applied."""
    return {name: setting(name).check(value) for name, value in values.items()}


def defaults(names: Iterable[str] = SETTINGS) -> dict[str, Any]:
    return {name: SETTINGS[name].default for name in names}


@dataclass(frozen=True)
class GenerationSettings:
    """What the session generates with. Frozen: a change is a new object, swapped in whole
    and read by the session at its next bar. Every field is checked against the schema."""

    temperature: float = 0.2
    top_k: int = 0
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    programs: tuple[int, ...] | None = None  # None: the instruments the musician plays
    bars: int | None = 4  # bars of answer in continue mode (None: as long as the phrase)
    variation: float = 0.3  # 0 = the previous pass again, 1 = free (see ostinato.engine.copy)
    loop_bars: int | None = None  # None: from the DAW's loop jumps or the musician's repetition
    fill: bool = False  # the loop's last bar varies freely
    density: float = 1.25  # note budget per bar × the musician's busiest recent bar (0 = off)
    out_channels: tuple = parse_out({})  # instrument → output channel (see ostinato.channels)
    in_channels: tuple = parse_in({})  # input channel → instrument
    program_change: bool = False  # Bank Select + Program Change before an instrument plays
    phrase_bars: int = 2  # a phrase this long is answered without waiting for silence
    mode: str = "continue"
    seed: int | None = None
    key_lock: bool = True  # pitched notes stay in the context's key (+ the notes it used)
    style: str | None = None  # None: auto (no style asked for); see ostinato.model.style
    guidance: float = 0.0  # classifier-free guidance towards the style (0 = off)
    commit: float | None = 1.0  # beats from one commit point to the next; None: "bar" (whole)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, SETTINGS[f.name].check(getattr(self, f.name)))
        self.sampling  # the sampler agrees  # noqa: B018

    @property
    def sampling(self) -> SamplingSettings:
        from ostinato.model.sampling import SamplingSettings

        return SamplingSettings(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
        )

    def replace(self, **changes: Any) -> GenerationSettings:
        """A validated copy with ``changes``; raises SettingError and changes nothing if bad."""
        for name in changes:
            if setting(name).group != "generation":
                raise SettingError(f"{name} is not a generation setting")
        return dataclasses.replace(self, **changes)
