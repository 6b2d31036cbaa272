"""MIDI learn: which CC drives which knob, and each CC turned into a setting change.

The map, (channel or None, CC number) → setting, starts as the config file's ``[cc]`` table;
``/ostinato/learn <setting>`` makes the next CC on the input drive that setting (on the channel
it came on), ``/ostinato/unlearn <setting>`` forgets its CC. Each change is written back to the
config file (``ostinato/config.py``: tomlkit, atomically) by a short thread of its own, off
the input thread, which keeps reading clock ticks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ostinato.config import CcMap, ConfigError, save_cc_map
from ostinato.settings import KNOBS

log = logging.getLogger(__name__)

FIRST_CHANNEL_MODE_CC = 120  # CC 120 and up (All Notes Off: a DAW's Stop…) never learn


class CcLearner:
    """``apply(**changes)`` changes settings (ValueError: refused); ``changed()`` says the
    state the panel shows changed (the learning, the map)."""

    def __init__(
        self,
        cc_map: CcMap,
        config_path: Path | None,
        apply: Callable[..., Any],
        changed: Callable[[], None],
    ) -> None:
        self.cc_map: CcMap = dict(cc_map)  # replaced as a whole on every change
        self.learning: str | None = None  # the setting the next CC will drive
        self.config_path = config_path  # where the map is saved ([cc] table); None: nowhere
        self._apply = apply
        self._changed = changed
        self._save_lock = threading.Lock()  # one write of the config file at a time

    def learn(self, setting: str) -> None:
        self.learning = setting
        log.info("MIDI learn: move a knob to drive %s", setting)
        self._changed()

    def unlearn(self, setting: str) -> None:
        self.cc_map = {cc: name for cc, name in self.cc_map.items() if name != setting}
        self.save()

    def on_cc(self, channel: int, cc: int, value: int) -> None:
        """A CC on the input (the input thread)."""
        learning = self.learning
        if learning is not None and cc < FIRST_CHANNEL_MODE_CC:
            self.learning = None
            mapped = {c: n for c, n in self.cc_map.items() if n != learning}
            mapped[(channel, cc)] = learning  # the knob's own channel: CC 21 elsewhere is not it
            self.cc_map = mapped
            log.info("MIDI learn: CC %d on channel %d drives %s", cc, channel + 1, learning)
            # this is the MIDI input thread: the file is written off it, clock ticks keep coming
            threading.Thread(target=self.save, name="ostinato-save-cc").start()
        name = self.cc_map.get((channel, cc)) or self.cc_map.get((None, cc))
        if name is None:
            return
        try:
            self._apply(**{name: KNOBS[name].value(value)})
        except ValueError as exc:
            log.warning("CC %d → %s: %s", cc, name, exc)

    def save(self) -> None:
        """Write the map to the config file (any thread; one write at a time)."""
        with self._save_lock:
            self._changed()
            path = self.config_path
            if path is None:
                log.info("MIDI learn is not saved: no config file (--config)")
                return
            try:
                save_cc_map(path, self.cc_map)
            except OSError as exc:
                log.error("cannot save the CC map to %s: %s", path, exc.strerror)
            except ConfigError as exc:
                log.error("%s", exc)
