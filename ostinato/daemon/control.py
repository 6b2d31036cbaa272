"""OSC control: every live setting of :mod:`ostinato.settings` is an address (checked there,
as the config file and the CLI are), plus panic, the take actions (regenerate, keep, undo),
status, subscribe and MIDI CC learn. The
GUI is one OSC client among others (TouchOSC, Max, Pd, a DAW's OSC output), so the daemon
runs headless and the panel can come and go.

The server runs on its own thread and never takes a lock the real-time path holds for
longer than a copy: a change builds a new frozen settings object and swaps it in, which the
session reads at the start of its next bar (a new ``loop_bars`` is followed at once, so that
a take action just after it counts places in the new loop). Every request that changes
nothing because it is wrong gets ``/ostinato/error <address> <reason>`` back. Bundles are
dispatched at once, their timetags ignored (see :class:`ImmediateDispatcher`): nothing a
client sends can make the server thread wait.

Replies and pushes (to the sender of a request, or to subscribers):

- ``/ostinato/state key value key value …``: the whole state (settings, transport, engine);
  sent for ``/ostinato/status`` and pushed to subscribers whenever something changes.
- ``/ostinato/heartbeat bpm bar beat running bar_ms misses``: ten times a second to
  subscribers.
- ``/ostinato/roll beats_per_bar now_beat (start duration pitch generated)…``: the notes of the
  last bars, for ``/ostinato/roll``.
- ``/ostinato/ok <address>`` after a change (a take action adds what it did, in words:
  ``/ostinato/ok /ostinato/regenerate "bar 6: its take is thrown away …"``),
  ``/ostinato/error <address> <reason>`` on refusal or when there is nothing to act on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket, ParseError
from pythonosc.osc_server import BlockingOSCUDPServer

from ostinato.daemon.takes import TakeError
from ostinato.settings import LEARNABLE, LIVE, OSC_PREFIX, SETTINGS, TRIGGERS

log = logging.getLogger(__name__)

PREFIX = OSC_PREFIX
SUBSCRIPTION_S = 30.0  # a subscriber renews within this, or is dropped
HEARTBEAT_S = 0.1
ROLL_BARS = 5  # the panel shows the last bars and the one generated ahead


def convert(name: str, args: tuple):
    """The OSC arguments of a setting address → the value, or SettingError (a ValueError)."""
    return SETTINGS[name].from_osc(args)


class ImmediateDispatcher(Dispatcher):
    """Dispatches every message of a packet as it arrives. python-osc's own dispatcher
    sleeps on the server thread until a bundle's timetag: a bundle stamped an hour ahead
    (a client's wrong clock, or a hostile one) would hold panic and every setting back for
    that hour. Timetags are ignored here; a client that wants timing sends at the time."""

    def call_handlers_for_packet(self, data: bytes, client_address: tuple[str, int]) -> list:
        try:
            packet = OscPacket(data)
        except ParseError:
            return []
        for timed in packet.messages:
            for handler in self.handlers_for_address(timed.message.address):
                handler.invoke(client_address, timed.message)
        return []


class ControlServer:
    """OSC over UDP. ``daemon`` supplies ``apply(**settings)``, ``panic()``,
    ``take(action, on)``, ``learn(setting)``, ``unlearn(setting)``, ``state()``,
    ``heartbeat()`` and ``roll(bars)`` (see :class:`ostinato.daemon.daemon.Daemon`)."""

    def __init__(self, daemon, host: str = "127.0.0.1", port: int = 9000) -> None:
        self.daemon = daemon
        dispatcher = ImmediateDispatcher()
        for name in LIVE:
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
        for name in TRIGGERS:
            handlers[name] = self._on_take
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

    def _on_take(self, client, address: str, *args) -> None:
        """``/ostinato/regenerate``, ``/ostinato/keep [i 1|0]`` (default 1),
        ``/ostinato/undo``: answered with what was done, or why nothing was."""
        action = address.rsplit("/", 1)[-1]
        on = True
        if action == "keep":
            if len(args) > 1 or (args and args[0] not in (0, 1, "on", "off")):
                got = ", ".join(map(repr, args))
                self._error(client, address, "keep takes 1 (keep the bar playing now) or 0 "
                            f"(release every kept bar), got {got}")  # fmt: skip
                return
            on = not args or args[0] in (1, "on")
        elif args:
            self._error(client, address, f"{action} takes no argument")
            return
        try:
            done = self.daemon.take(action, on)
        except TakeError as exc:
            self._error(client, address, str(exc))
            return
        self._send(client, f"{PREFIX}/ok", address, done)

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
        """``/ostinato/learn <setting or action>``: the next CC on the input drives that
        setting (or, pressed, triggers that take action); ``/ostinato/unlearn <name>``
        forgets its CC."""
        verb = address.rsplit("/", 1)[-1]
        if len(args) != 1 or args[0] not in LEARNABLE:
            self._error(client, address, f"{verb} takes one of {', '.join(LEARNABLE)}")
            return
        (self.daemon.learn if verb == "learn" else self.daemon.unlearn)(args[0])
        self._send(client, f"{PREFIX}/ok", address)

    def _on_unknown(self, client, address: str, *args) -> None:
        self._error(client, address, "unknown address (see the README's OSC section)")
