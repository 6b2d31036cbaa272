"""OSC control: every field of :class:`GenerationSettings` is an address, plus panic, status,
subscribe and MIDI CC learn. The GUI is one OSC client among others (TouchOSC, Max, Pd, a
DAW's OSC output), so the daemon runs headless and the panel can come and go.

The server runs on its own thread and never takes a lock the real-time path holds for
longer than a copy: a change builds a new frozen settings object and swaps it in, which the
session reads at the start of its next bar. Every request that changes nothing because it
is wrong gets ``/ostinato/error <address> <reason>`` back.

Replies and pushes (to the sender of a request, or to subscribers):

- ``/ostinato/state key value key value …``: the whole state (settings, transport, engine);
  sent for ``/ostinato/status`` and pushed to subscribers whenever something changes.
- ``/ostinato/heartbeat bpm bar beat running bar_ms misses``: ten times a second to
  subscribers.
- ``/ostinato/roll beats_per_bar now_beat (start duration pitch generated)…``: the notes of the
  last bars, for ``/ostinato/roll``.
- ``/ostinato/ok <address>`` after a change, ``/ostinato/error <address> <reason>`` on refusal.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import BlockingOSCUDPServer

from ostinato.settings import MODES, GenerationSettings

log = logging.getLogger(__name__)

PREFIX = "/ostinato"
SUBSCRIPTION_S = 30.0  # a subscriber renews within this, or is dropped
HEARTBEAT_S = 0.1
ROLL_BARS = 5  # the panel shows the last bars and the one generated ahead


@dataclass(frozen=True)
class Knob:
    """A setting a MIDI CC can drive: CC 0..127 maps linearly onto lo..hi."""

    lo: float
    hi: float
    integer: bool = False

    def value(self, cc_value: int) -> float | int:
        x = self.lo + (self.hi - self.lo) * cc_value / 127.0
        return round(x) if self.integer else round(x, 3)


KNOBS = {
    "temperature": Knob(0.1, 2.0),
    "top_p": Knob(0.05, 1.0),
    "top_k": Knob(0, 64, integer=True),
    "repetition_penalty": Knob(1.0, 2.0),
    "bars": Knob(1, 16, integer=True),
    "phrase_bars": Knob(1, 8, integer=True),
}
FLOAT_SETTINGS = {"temperature", "top_p", "repetition_penalty"}
INT_SETTINGS = {"top_k", "bars", "phrase_bars"}


def format_programs(programs: tuple[int, ...] | None) -> str:
    if programs is None:
        return "auto"
    return ",".join("drums" if p == -1 else str(p) for p in programs)


def parse_programs(args: tuple) -> tuple[int, ...] | None:
    """``"auto"`` (what the musician plays), ``"drums,33"``, or the numbers as OSC ints."""
    if len(args) == 1 and isinstance(args[0], str):
        text = args[0].strip().lower()
        if text in ("auto", ""):
            return None
        parts = [p.strip() for p in text.split(",")]
        try:
            return tuple(-1 if p == "drums" else int(p) for p in parts)
        except ValueError:
            raise ValueError(
                f"programs must be 'auto' or like 'drums,33', got {args[0]!r}"
            ) from None
    if args and all(isinstance(a, int) and not isinstance(a, bool) for a in args):
        return tuple(args)
    raise ValueError("programs takes 'auto', a string like 'drums,33', or GM program ints")


def convert(name: str, args: tuple):
    """The OSC arguments of a setting address → the Python value, or ValueError."""
    if name == "programs":
        return parse_programs(args)
    if len(args) != 1:
        raise ValueError(f"{name} takes one argument, got {len(args)}")
    (value,) = args
    if name in FLOAT_SETTINGS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} takes a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite")
        return round(float(value), 6)  # OSC floats are 32-bit: 0.55 arrives as 0.550000011
    if name in INT_SETTINGS:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} takes an integer, got {type(value).__name__}")
        return value
    if name == "mode":
        if not isinstance(value, str):
            raise ValueError(f"mode takes a string ({', '.join(MODES)})")
        return value
    if name == "key_lock":
        if isinstance(value, str) and value.lower() in ("on", "true", "yes", "off", "false", "no"):
            return value.lower() in ("on", "true", "yes")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise ValueError("key_lock takes 1 or 0 (on or off)")
    if name == "seed":
        if isinstance(value, str) and value.lower() in ("none", "random", ""):
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("seed takes an integer, or 'none' for a new seed every bar")
        return None if value < 0 else value
    raise ValueError(f"unknown setting {name}")


class ControlServer:
    """OSC over UDP. ``daemon`` supplies ``session``, ``scheduler``, ``clock``, ``recorder``,
    ``panic()``, ``state()`` and the CC map (see :class:`ostinato.daemon.daemon.Daemon`)."""

    def __init__(self, daemon, host: str = "127.0.0.1", port: int = 9000) -> None:
        self.daemon = daemon
        dispatcher = Dispatcher()
        for name in GenerationSettings.__dataclass_fields__:
            dispatcher.map(f"{PREFIX}/{name}", self._on_setting, name, needs_reply_address=True)
        handlers: dict[str, Callable] = {
            "panic": self._on_panic,
            "status": self._on_status,
            "subscribe": self._on_subscribe,
            "unsubscribe": self._on_unsubscribe,
            "roll": self._on_roll,
            "learn": self._on_learn,
            "unlearn": self._on_learn,
        }
        for name, handler in handlers.items():
            dispatcher.map(f"{PREFIX}/{name}", handler, needs_reply_address=True)
        dispatcher.set_default_handler(self._on_unknown, needs_reply_address=True)
        self.server = BlockingOSCUDPServer((host, port), dispatcher)
        self.address = self.server.server_address
        self.subscribers: dict[tuple[str, int], float] = {}  # address → expiry (monotonic)
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self.server.serve_forever, args=(0.25,), name="ostinato-osc",
                             daemon=True),
            threading.Thread(target=self._push_loop, name="ostinato-osc-push", daemon=True),
        ]  # fmt: skip

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._stop.set()
        self._changed.set()
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(1.0)

    def changed(self) -> None:
        """Something in the state changed (any thread): subscribers get the new state."""
        self._changed.set()

    # -- sending ----------------------------------------------------------------------------
    def _send(self, to: tuple[str, int], address: str, *args) -> None:
        builder = OscMessageBuilder(address=address)
        for arg in args:
            builder.add_arg(arg)
        try:
            self.server.socket.sendto(builder.build().dgram, to)
        except OSError as exc:  # the client went away: not our problem
            log.debug("cannot reply to %s: %s", to, exc)

    def _error(self, to: tuple[str, int], address: str, reason: str) -> None:
        log.warning("OSC %s from %s:%d refused: %s", address, to[0], to[1], reason)
        self._send(to, f"{PREFIX}/error", address, reason)

    def _state_args(self) -> list:
        args: list = []
        for key, value in self.daemon.state().items():
            if value is None:
                value = "none"
            elif isinstance(value, bool):
                value = int(value)
            elif not isinstance(value, (int, float, str)):
                value = str(value)
            args += [key, value]
        return args

    def _push_loop(self) -> None:
        next_beat = time.monotonic()
        while not self._stop.is_set():
            timeout = max(0.0, next_beat - time.monotonic())
            changed = self._changed.wait(timeout)
            if self._stop.is_set():
                return
            now = time.monotonic()
            with self._lock:
                for address, expiry in list(self.subscribers.items()):
                    if expiry < now:
                        del self.subscribers[address]
                targets = list(self.subscribers)
            if changed:
                self._changed.clear()
                if targets:
                    state = self._state_args()
                    for to in targets:
                        self._send(to, f"{PREFIX}/state", *state)
            if now >= next_beat:
                next_beat = now + HEARTBEAT_S
                if targets:
                    beat = self.daemon.heartbeat()
                    for to in targets:
                        self._send(to, f"{PREFIX}/heartbeat", *beat)

    # -- handlers (the OSC thread) ----------------------------------------------------------
    def _on_setting(self, client, address: str, fixed: list, *args) -> None:
        name = fixed[0]
        try:
            value = convert(name, args)
            self.daemon.apply(**{name: value})
        except ValueError as exc:
            self._error(client, address, str(exc))
            return
        self._send(client, f"{PREFIX}/ok", address)

    def _on_panic(self, client, address: str, *args) -> None:
        self.daemon.panic()
        self._send(client, f"{PREFIX}/ok", address)

    def _on_status(self, client, address: str, *args) -> None:
        self._send(client, f"{PREFIX}/state", *self._state_args())

    def _on_subscribe(self, client, address: str, *args) -> None:
        """``/ostinato/subscribe [port]``: pushes go to the sender (or to its host at port)."""
        to = client
        if args:
            if len(args) != 1 or not isinstance(args[0], int) or not 0 < args[0] < 65536:
                self._error(client, address, "subscribe takes an optional port number")
                return
            to = (client[0], args[0])
        with self._lock:
            self.subscribers[to] = time.monotonic() + SUBSCRIPTION_S
        self._send(to, f"{PREFIX}/state", *self._state_args())

    def _on_unsubscribe(self, client, address: str, *args) -> None:
        with self._lock:
            self.subscribers.pop(client, None)
            if args and isinstance(args[0], int):
                self.subscribers.pop((client[0], args[0]), None)
        self._send(client, f"{PREFIX}/ok", address)

    def _on_roll(self, client, address: str, *args) -> None:
        beats_per_bar, now_beat, notes = self.daemon.roll(ROLL_BARS)
        flat: list = [float(beats_per_bar), float(now_beat)]
        for start, duration, pitch, generated in notes[-256:]:  # one UDP packet
            flat += [float(start), float(duration), int(pitch), int(generated)]
        self._send(client, f"{PREFIX}/roll", *flat)

    def _on_learn(self, client, address: str, *args) -> None:
        """``/ostinato/learn <setting>``: the next CC on the input drives that setting;
        ``/ostinato/unlearn <setting>`` forgets its CC."""
        verb = address.rsplit("/", 1)[-1]
        if len(args) != 1 or args[0] not in KNOBS:
            self._error(client, address, f"{verb} takes one of {', '.join(KNOBS)}")
            return
        (self.daemon.learn if verb == "learn" else self.daemon.unlearn)(args[0])
        self._send(client, f"{PREFIX}/ok", address)

    def _on_unknown(self, client, address: str, *args) -> None:
        self._error(client, address, "unknown address (see the README's OSC section)")
