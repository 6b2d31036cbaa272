"""Styles of the token language: one ``Style_<name>`` token after ``BOS`` says what kind of
music a sequence is, so a model can be asked for one (``--style``) and, trained with the
style dropped now and then (``Style_none``), steered by classifier-free guidance.

The names: the loop generator's styles (:mod:`ostinato.loops.styles`), the OpenScore corpora
(``lied``: Lieder, ``quartet``: string quartets), ``drums`` (Groove MIDI) and ``none``
(unknown, or the style left out). Pure Python: the settings schema imports it.
"""

from __future__ import annotations

import re
from pathlib import PurePath

#: The loop generator's styles, in the order of ostinato.loops.styles.STYLES.
LOOP_STYLES = ("house", "techno", "hiphop", "dnb", "pop", "lofi")
NONE = "none"
#: Every style a new tokenizer has a token for; ``none`` last.
STYLES = (*LOOP_STYLES, "lied", "quartet", "drums", NONE)
TOKEN_PREFIX = "Style_"

# Folder or file-name words → style, looked for in a path's parts from the file upwards.
_ALIASES = {
    "hip-hop": "hiphop",
    "hip_hop": "hiphop",
    "drum-and-bass": "dnb",
    "drum_and_bass": "dnb",
    "drumandbass": "dnb",
    "lo-fi": "lofi",
    "lo_fi": "lofi",
    "lieder": "lied",
    "openscore-lieder": "lied",
    "quartets": "quartet",
    "string-quartets": "quartet",
    "openscore-quartets": "quartet",
    "groove-midi": "drums",
    "groove": "drums",
    "gmd": "drums",
}
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def token_name(style: str) -> str:
    """``"house"`` → ``"Style_house"`` (the token's name in the tokenizer's vocabulary)."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; the styles are {', '.join(STYLES)}")
    return TOKEN_PREFIX + style


def _style_of_word(word: str) -> str | None:
    if word in STYLES and word != NONE:
        return word
    return _ALIASES.get(word)


def style_of(path: str | PurePath) -> str:
    """The style of a corpus file, from where it lies: the nearest folder named after a style
    (``synth/house/…`` as `ostinato data synth` writes, ``groove-midi/…``,
    ``openscore-lieder/…``), else a style word in the file name (``000012_techno_…``,
    ``gmd_drummer1_…``); ``none`` when nothing says."""
    parts = [p.lower() for p in PurePath(path).parts]
    if not parts:
        return NONE
    *folders, name = parts
    for folder in reversed(folders):
        found = _style_of_word(folder)
        if found is None and folder.startswith("drummer") and folder[7:].isdigit():
            found = "drums"  # Groove MIDI's drummer1 … drummer10 folders
        if found is not None:
            return found
    stem = name.rsplit(".", 1)[0]
    for word in re.split(r"[_\s.]+", stem):
        for piece in [word, *_WORD.findall(word)]:
            found = _style_of_word(piece)
            if found is not None:
                return found
    return NONE
