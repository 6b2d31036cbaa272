"""MIDI ports through python-rtmidi: virtual ports named "Ostinato In"/"Ostinato Out", or
existing ports opened by name (the only way on Windows, where WinMM has no virtual ports).

Input uses no Python callback: a callback makes the backend's real-time thread (JACK's
process cycle) wait for the GIL on every message, stalling it for as long as another Python
thread runs. Instead rtmidi queues each message in C++ with its delta time, stamped when the
backend delivered it, and :meth:`MidiPorts.poll` (called by the input worker) drains that
queue. The deltas are put on the ``perf_counter()`` time line through the least-delayed poll
seen so far, so MIDI clock timestamps stay exact however late the worker runs.
"""

from __future__ import annotations

import logging
import sys
import time

import rtmidi

from ostinato.daemon.errors import PortError

log = logging.getLogger(__name__)

IN_NAME, OUT_NAME = "Ostinato In", "Ostinato Out"
BACKENDS = {
    "alsa": rtmidi.API_LINUX_ALSA,
    "jack": rtmidi.API_UNIX_JACK,
    "coremidi": rtmidi.API_MACOSX_CORE,
    "winmm": rtmidi.API_WINDOWS_MM,
}


def default_backend() -> str:
    if sys.platform == "darwin":
        return "coremidi"
    if sys.platform.startswith("win"):
        return "winmm"
    return "alsa"


def _api(backend: str) -> int:
    if backend not in BACKENDS:
        raise PortError(f"unknown MIDI backend {backend!r}; choose from {', '.join(BACKENDS)}")
    api = BACKENDS[backend]
    if api not in rtmidi.get_compiled_api():
        raise PortError(f"python-rtmidi was built without the {backend} backend")
    return api


def list_ports(backend: str) -> tuple[list[str], list[str]]:
    """(inputs, outputs) that ``backend`` can see now."""
    api = _api(backend)
    try:
        midi_in, midi_out = rtmidi.MidiIn(api, name="ostinato-probe"), rtmidi.MidiOut(api)
    except rtmidi.SystemError as exc:
        raise PortError(f"the {backend} MIDI backend is not available here: {exc}") from exc
    try:
        return midi_in.get_ports(), midi_out.get_ports()
    finally:
        midi_in.delete()
        midi_out.delete()


def _find(ports: list[str], wanted: str) -> int:
    for i, name in enumerate(ports):
        if name == wanted or name.startswith(wanted) or wanted in name:
            return i
    return -1


def _backend_error(backend: str, exc: Exception) -> PortError:
    hint = {
        "jack": "is the JACK server running?",
        "alsa": "is the ALSA sequencer available (/dev/snd/seq, module snd-seq)? "
        "Or use --backend jack",
    }.get(backend, "see `ostinato ports`")
    return PortError(f"cannot open the {backend} MIDI backend ({exc}); {hint}")


class MidiPorts:
    """The daemon's input and (unless ``with_output=False``: the sender process owns it)
    output."""

    def __init__(
        self,
        backend: str | None = None,
        in_port: str | None = None,
        out_port: str | None = None,
        client_name: str = "ostinato",
        with_output: bool = True,
        with_input: bool = True,
    ) -> None:
        self.backend = backend or default_backend()
        api = _api(self.backend)
        self._elapsed = 0.0  # sum of rtmidi's delta times
        self._offset: float | None = None  # perf_counter() − elapsed, smallest seen
        self.midi_in = self.midi_out = None
        try:
            # One client each (JACK renames a second client of the same name): the ports
            # appear as "<client>-in:Ostinato In" and "<client>-out:Ostinato Out".
            if with_input:
                self.midi_in = rtmidi.MidiIn(api, name=f"{client_name}-in", queue_size_limit=4096)
            if with_output:
                self.midi_out = rtmidi.MidiOut(api, name=f"{client_name}-out")
        except rtmidi.SystemError as exc:
            raise _backend_error(self.backend, exc) from exc
        if self.midi_in is not None:
            # Nothing is filtered inside rtmidi: a message it drops still moves the delta
            # times it stamps the next one with on some backends; the daemon drops SysEx and
            # Active Sensing itself, after the time base has seen them.
            self.midi_in.ignore_types(sysex=False, timing=False, active_sense=False)
            self.midi_in.set_error_callback(self._on_error)
            if in_port is None:
                self._open_virtual(self.midi_in, IN_NAME)
            else:
                self._open_named(self.midi_in, in_port, "input")
        if self.midi_out is not None:
            if out_port is None:
                self._open_virtual(self.midi_out, OUT_NAME)
            else:
                self._open_named(self.midi_out, out_port, "output")

    def _open_virtual(self, port, name: str) -> None:
        if self.backend == "winmm":
            raise PortError(
                "Windows has no virtual MIDI ports: create two loopMIDI ports (e.g. "
                f"'{IN_NAME}' and '{OUT_NAME}') and pass --in and --out with their names"
            )
        try:
            port.open_virtual_port(name)
        except (rtmidi.SystemError, NotImplementedError) as exc:
            raise PortError(f"cannot create the virtual port {name!r}: {exc}") from exc

    def _open_named(self, port, wanted: str, kind: str) -> None:
        names = port.get_ports()
        index = _find(names, wanted)
        if index < 0:
            hint = " (on Windows: create it with loopMIDI first)" if self.backend == "winmm" else ""
            raise PortError(
                f"no MIDI {kind} port named {wanted!r}{hint}; ports now: "
                + (", ".join(names) or "none")
            )
        port.open_port(index)

    def poll(self) -> list[tuple[float, list[int]]]:
        """Every message waiting in rtmidi's queue, as (perf_counter time, bytes).

        The whole queue is drained first: its newest message is the one delivered closest
        to now, so ``now − elapsed`` after it bounds the offset from above; stamping each
        message as it is read would put a backlog (ticks queued while the daemon was still
        loading) all at the moment of the poll."""
        midi_in = self.midi_in
        if midi_in is None:
            raise PortError("these ports were opened without an input")
        batch = []
        while True:
            event = midi_in.get_message()
            if event is None:
                break
            message, delta = event
            self._elapsed += delta
            batch.append((self._elapsed, message))
        if not batch:
            return []
        offset = time.perf_counter() - self._elapsed
        if self._offset is None or offset < self._offset:
            self._offset = offset  # a poll only ever runs late: the earliest is the truest
        return [(self._offset + elapsed, message) for elapsed, message in batch]

    def _on_error(self, error_type, message, data=None) -> None:
        log.warning("MIDI input error: %s", message)

    def send(self, message: list[int]) -> None:
        if self.midi_out is None:
            raise PortError("these ports were opened without an output")
        self.midi_out.send_message(message)

    def close(self) -> None:
        for port in (self.midi_in, self.midi_out):
            if port is None:
                continue
            try:
                port.close_port()
                port.delete()
            except Exception:  # closing twice or after a backend error is harmless
                pass
