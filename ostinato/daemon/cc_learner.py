"""MIDI learn: which CC drives which knob or triggers which take action, and each CC turned
into a setting change or an action.

The map, (channel or None, CC number) → setting or trigger, starts as the config file's
``[cc]`` table; ``/ostinato/learn <name>`` makes the next CC on the input drive that setting
(or trigger that action: ``regenerate``, ``keep``, ``undo``) on the channel it came on,
``/ostinato/unlearn <name>`` forgets its CC. A trigger is a button: a value ≥ 64 after one
below 64 (or the first one heard) fires its action once; the CC that was learned does not
fire it. Each change is written back to the config file (``ostinato/config.py``: tomlkit,
atomically) by a short thread of its own, off the input thread, which keeps reading clock
ticks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ostinato.config import CcMap, ConfigError, save_cc_map
from ostinato.settings import KNOBS, TRIGGERS

log = logging.getLogger(__name__)

FIRST_CHANNEL_MODE_CC = 120  # CC 120 and up (All Notes Off: a DAW's Stop…) never learn
PRESSED = 64  # a trigger's CC at or above this is a button held down


class CcLearner:
    """``apply(**changes)`` changes settings (ValueError: refused); ``changed()`` says the
    state the panel shows changed (the learning, the map); ``trigger(action)`` runs a take
    action (an exception: refused, logged)."""

    def __init__(
        self,
        cc_map: CcMap,
        config_path: Path | None,
        apply: Callable[..., Any],
        changed: Callable[[], None],
        trigger: Callable[[str], Any] | None = None,
    ) -> None:
        self.cc_map: CcMap = dict(cc_map)  # replaced as a whole on every change
        self.learning: str | None = None  # the setting the next CC will drive
        self.config_path = config_path  # where the map is saved ([cc] table); None: nowhere
        self._apply = apply
        self._changed = changed
        self._trigger = trigger
        self._pressed: dict[tuple[int, int], bool] = {}  # a trigger's CC: held down now
        self._save_lock = threading.Lock()  # one write of the config file at a time

    def learn(self, setting: str) -> None:
        self.learning = setting
        if setting in TRIGGERS:
            log.info("MIDI learn: press a button to trigger %s", setting)
        else:
            log.info("MIDI learn: move a knob to drive %s", setting)
        self._changed()

    def unlearn(self, setting: str) -> None:
        self.cc_map = {cc: name for cc, name in self.cc_map.items() if name != setting}
        self.save()

    def on_cc(self, channel: int, cc: int, value: int) -> None:
        """A CC on the input (the input thread)."""
        learning = self.learning
        learned = False
        if learning is not None and cc < FIRST_CHANNEL_MODE_CC:
            self.learning = None
            mapped = {c: n for c, n in self.cc_map.items() if n != learning}
            mapped[(channel, cc)] = learning  # the knob's own channel: CC 21 elsewhere is not it
            self.cc_map = mapped
            learned = True
            log.info("MIDI learn: CC %d on channel %d %s %s", cc, channel + 1,
                     "triggers" if learning in TRIGGERS else "drives", learning)  # fmt: skip
            # this is the MIDI input thread: the file is written off it, clock ticks keep coming
            threading.Thread(target=self.save, name="ostinato-save-cc").start()
        name = self.cc_map.get((channel, cc)) or self.cc_map.get((None, cc))
        if name is None:
            return
        if name in TRIGGERS:
            pressed = value >= PRESSED
            was = self._pressed.get((channel, cc), False)
            self._pressed[(channel, cc)] = pressed
            if pressed and not was and not learned and self._trigger is not None:
                try:
                    self._trigger(name)
                except Exception as exc:  # nothing to act on (TakeError), or worse
                    log.warning("CC %d → %s: %s", cc, name, exc)
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
