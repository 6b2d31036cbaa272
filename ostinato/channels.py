"""Channels both ways: which MIDI channel each instrument Ostinato plays goes out on, and which
instrument the model hears on each input channel.

Instruments are named by family, after the General MIDI program groups, or given as a GM
program number (0–127; ``drums`` for the kit on channel 10):

=========  ======================================================  ====================
family     GM programs                                             plays as (input)
=========  ======================================================  ====================
drums      the kit                                                 −1
keys       0–23 (pianos, chromatic percussion, organs)             0  Acoustic Grand
guitar     24–31                                                   25 Steel Guitar
bass       32–39                                                   33 Fingered Bass
pad        40–55, 88–95 (strings, ensembles, synth pads)           89 Warm Pad
lead       56–87 (brass, reeds, pipes, synth leads)                81 Saw Lead
other      96–127 (effects, ethnic, percussive, sound effects)     98 Crystal
=========  ======================================================  ====================

Defaults (1-based channels, as musicians count them): out — keys 1, bass 2, pad 3, lead 4,
guitar 5, other 6, drums 10; in — the same channels, each heard as its family (any other
channel: keys). So a jam on drums, bass and keys comes out on channels 10, 2 and 1, and what
the musician plays on channel 2 reaches the model as bass. Both maps are settings
(``out_channels``, ``in_channels``: the config file, ``--out-channels``, OSC, the panel); a map
given in part changes only the entries it names. With ``program_change`` Ostinato sends Bank
Select 0 and the Program Change of an instrument on its channel before the first note it
plays there, and again when another instrument takes the channel, so a GM synth plays the
right sound (give each instrument its own channel for that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

DRUMS = -1
FAMILIES = ("keys", "guitar", "bass", "pad", "lead", "other", "drums")
SOUND_OF = {"keys": 0, "guitar": 25, "bass": 33, "pad": 89, "lead": 81, "other": 98, "drums": -1}
DEFAULT_OUT = {"keys": 1, "bass": 2, "pad": 3, "lead": 4, "guitar": 5, "other": 6, "drums": 10}
DEFAULT_IN = {channel: family for family, channel in DEFAULT_OUT.items()}

OutMap = tuple[tuple[str, int], ...]  # (family or program number as text, channel 1–16)
InMap = tuple[tuple[int, str], ...]  # (channel 1–16, family or program number as text)


def family_of(program: int) -> str:
    if program == DRUMS:
        return "drums"
    if program < 24:
        return "keys"
    if program < 32:
        return "guitar"
    if program < 40:
        return "bass"
    if program < 56 or 88 <= program < 96:
        return "pad"
    if program < 88:
        return "lead"
    return "other"


def _instrument(word: str) -> str:
    """A family name or a GM program number (as text), checked; ValueError if neither."""
    w = word.strip().lower()
    if w in FAMILIES:
        return w
    program = int(w)  # ValueError: neither
    if not 0 <= program <= 127:
        raise ValueError(word)
    return str(program)


def _channel(value: object) -> int:
    """A channel 1–16 (a whole number, or its digits as text); ValueError if not."""
    if isinstance(value, str) and value.strip().isdigit():
        channel = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        channel = value
    else:
        raise ValueError(value)
    if not 1 <= channel <= 16:
        raise ValueError(value)
    return channel


def _pairs(value: object) -> Iterable[tuple[object, object]]:
    """A TOML/Python mapping, or text like ``bass=2, drums=10``."""
    if isinstance(value, Mapping):
        return list(value.items())
    if isinstance(value, str):
        pairs = []
        for item in value.split(","):
            if not item.strip():
                continue
            key, sep, val = item.partition("=")
            if not sep:
                raise ValueError(item)
            pairs.append((key.strip(), val.strip()))
        return pairs
    raise ValueError(value)


def parse_out(value: object) -> OutMap:
    """Instrument → output channel, over the defaults; ValueError when malformed."""
    merged: dict[str, int] = dict(DEFAULT_OUT)
    for key, channel in _pairs(value):
        merged[_instrument(str(key))] = _channel(channel)
    return tuple(sorted(merged.items()))


def parse_in(value: object) -> InMap:
    """Input channel → instrument, over the defaults; ValueError when malformed."""
    merged: dict[int, str] = dict(DEFAULT_IN)
    for channel, instrument in _pairs(value):
        merged[_channel(channel)] = _instrument(str(instrument))
    return tuple(sorted(merged.items()))


def format_map(pairs: Iterable[tuple[object, object]]) -> str:
    return ",".join(f"{a}={b}" for a, b in pairs)


class ChannelMap:
    """The two maps as the daemon uses them (0-based channels), built from the settings."""

    def __init__(self, out: OutMap | None = None, inp: InMap | None = None) -> None:
        self.out = dict(out or parse_out({}))
        self.inp = dict(inp or parse_in({}))

    def channel_for(self, program: int) -> int:
        """The 0-based output channel of ``program``: its own entry, else its family's."""
        channel = self.out.get(str(program)) if program >= 0 else None
        if channel is None:
            channel = self.out.get(family_of(program), DEFAULT_OUT[family_of(program)])
        return channel - 1

    def program_for(self, channel: int) -> int:
        """The program the model hears on 0-based input ``channel``."""
        instrument = self.inp.get(channel + 1, "keys")
        return SOUND_OF[instrument] if instrument in SOUND_OF else int(instrument)

    def input_programs(self) -> dict[int, int]:
        """0-based channel → program, for the recorder."""
        return {channel: self.program_for(channel) for channel in range(16)}
