"""A small OSC client for the daemon's control server (the panel and the tests use it; any
OSC program can do the same). One UDP socket: requests go out from it and replies and
subscription pushes come back to it, read by one thread that hands each message to
``on_message`` and to whoever waits for a reply."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

PREFIX = "/ostinato"


class ControlError(Exception):
    """The daemon refused a request (``/ostinato/error``) or did not answer."""


def state_dict(args: list) -> dict:
    """``/ostinato/state`` arguments (key, value, key, value …) → dict. OSC floats are 32-bit:
    they come back with the 7 digits they carry (0.9, not 0.8999999761581421)."""
    return {
        str(args[i]): float(f"{v:.7g}") if isinstance(v := args[i + 1], float) else v
        for i in range(0, len(args) - 1, 2)
    }


class ControlClient:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9000,
        on_message: Callable[[str, list], None] | None = None,
    ) -> None:
        self.target = (host, port)
        self.on_message = on_message
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1" if host in ("127.0.0.1", "localhost") else "0.0.0.0", 0))
        self.sock.settimeout(0.2)
        self._replies: queue.Queue[tuple[str, list]] = queue.Queue()
        self._waiting = threading.Lock()  # one request waits for its reply at a time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="ostinato-osc-client", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(1.0)
        self.sock.close()

    def send(self, address: str, *args) -> None:
        """Fire and forget (a closed client sends nothing)."""
        if self._stop.is_set():
            return
        builder = OscMessageBuilder(address=address)
        for arg in args:
            builder.add_arg(arg)
        self.sock.sendto(builder.build().dgram, self.target)

    def request(self, address: str, *args, expect: str | None = None, timeout: float = 2.0):
        """Send and wait for the reply: ``(address, args)``. Raises ControlError on
        ``/ostinato/error`` or no answer. ``expect``: the reply address (default: ``/ok``)."""
        expect = expect or f"{PREFIX}/ok"
        with self._waiting:
            while not self._replies.empty():
                self._replies.get_nowait()
            self.send(address, *args)
            end = time.monotonic() + timeout
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    raise ControlError(f"no answer to {address} from {self.target[0]}:"
                                       f"{self.target[1]} (is the daemon running?)")  # fmt: skip
                try:
                    reply, reply_args = self._replies.get(timeout=left)
                except queue.Empty:
                    continue
                if reply == f"{PREFIX}/error" and reply_args and reply_args[0] == address:
                    raise ControlError(str(reply_args[1]) if len(reply_args) > 1 else "refused")
                if reply == expect and (
                    expect != f"{PREFIX}/ok" or (reply_args and reply_args[0] == address)
                ):  # an /ok names what it answers: another request's /ok is not this one's
                    return reply, reply_args

    def set(self, name: str, *args) -> None:
        self.request(f"{PREFIX}/{name}", *args)

    def status(self, timeout: float = 2.0) -> dict:
        _, args = self.request(f"{PREFIX}/status", expect=f"{PREFIX}/state", timeout=timeout)
        return state_dict(args)

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                message = OscMessage(data)
                address, args = message.address, list(message.params)
            except Exception:  # not OSC: ignore
                continue
            if self._waiting.locked():
                self._replies.put((address, args))
            if self.on_message is not None:
                self.on_message(address, args)
