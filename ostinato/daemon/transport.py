"""What the DAW's transport means, in time: the thresholds the clock
(:mod:`ostinato.daemon.clock`) and the JACK sender's Stop reflex (:mod:`ostinato.daemon.jack_io`)
both judge by, written once so the two never disagree.

- A Stop followed within ``JUMP_TICKS`` ticks by a Start or Continue is a *loop jump* (how
  Ardour loops), not a stop: the music goes on at the new position.
- Ticks that stop coming while the transport runs, with no Stop, are a *gap* (an xrun, a USB
  MIDI device re-enumerating, a stalled machine). After ``SUSPEND_TICKS`` ticks' worth (at
  least ``SUSPEND_MIN_S``) the clock *suspends*: every sounding note is released, the epoch is
  kept, and ticks that come back on the same tempo line resume the song where the line puts
  it. Only a Stop, or no tick for the ``clock_timeout_s`` setting (``CLOCK_TIMEOUT_S`` by
  default), ends the epoch.

Pure arithmetic on seconds: called on JACK's real-time thread too (no allocation, no lock).
"""

from __future__ import annotations

JUMP_TICKS = 1.5  # Stop → Start/Continue within this many ticks: a loop jump
SUSPEND_TICKS, SUSPEND_MIN_S = 6, 0.15  # no tick for this long while running: a gap
CLOCK_TIMEOUT_S = 4.0  # no tick for this long (the clock_timeout_s setting): stopped


def is_loop_jump(stop_s: float, start_s: float, tick_s: float, slack_s: float = 0.0) -> bool:
    """A Start or Continue at ``start_s`` after a Stop at ``stop_s`` is a loop jump: it came
    within JUMP_TICKS ticks of ``tick_s`` seconds (plus the stamps' own slack)."""
    return start_s - stop_s <= JUMP_TICKS * tick_s + slack_s


def suspend_after_s(tick_s: float) -> float:
    """Seconds without a tick, while running, after which the clock suspends."""
    return max(SUSPEND_TICKS * tick_s, SUSPEND_MIN_S)
