"""Ostinato: a real-time MIDI continuation daemon."""

__version__ = "0.1.0"
