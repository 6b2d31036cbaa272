"""The daemon's errors that the command line reports, importable without a MIDI backend
(``ostinato train`` on a machine with no sound system never loads one)."""

from __future__ import annotations


class PortError(Exception):
    """A port cannot be opened; the message says what to do."""
