"""``ostinato doctor``: what this machine can and cannot do for Ostinato, one line each, with
the fix. Exit status 1 when something blocks ``ostinato run``."""

from __future__ import annotations

import hashlib
import json
import socket
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ostinato.config import Config, default_model_dir
from ostinato.settings import SETTINGS

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Check:
    status: str
    what: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{self.status:>4}] {self.what}: {self.detail}"
        return text + (f" — {self.fix}" if self.fix and self.status != OK else "")


def check_python() -> list[Check]:
    out = [Check(OK if sys.version_info >= (3, 10) else FAIL, "python", sys.version.split()[0],
                 "Ostinato needs Python 3.10 or newer")]  # fmt: skip
    for name in ("numpy", "mido", "python-rtmidi", "miditok", "symusic"):
        try:
            out.append(Check(OK, name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append(Check(FAIL, name, "not installed", "pip install ostinato"))
    runtimes = [n for n in ("onnxruntime", "onnxruntime-gpu") if _installed(n)]
    if not runtimes:
        out.append(Check(FAIL, "onnxruntime", "not installed", "pip install onnxruntime"))
    elif len(runtimes) == 2:
        out.append(Check(WARN, "onnxruntime", "both onnxruntime and onnxruntime-gpu installed",
                         "pip uninstall -y onnxruntime onnxruntime-gpu && pip install "
                         "onnxruntime-gpu (or onnxruntime)"))  # fmt: skip
    else:
        out.append(Check(OK, runtimes[0], metadata.version(runtimes[0])))
    if _installed("aalink"):
        out.append(Check(OK, "aalink", f"{metadata.version('aalink')} (Ableton Link)"))
    else:
        out.append(Check(WARN, "aalink", "not installed: no Ableton Link (--clock link, auto)",
                         "pip install 'ostinato[link]' (aalink, GPL-licensed)"))  # fmt: skip
    torch = metadata.version("torch") if _installed("torch") else None
    needed = "not installed (only to train and export: pip install 'ostinato[train]')"
    out.append(Check(OK, "torch", torch or needed))
    return out


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def check_midi() -> tuple[list[Check], bool]:
    """One line per backend; True if at least one backend can open ports now."""
    from ostinato.daemon.ports import BACKENDS, PortError, default_backend, list_ports

    out, usable = [], False
    fixes = {
        "alsa": "load the ALSA sequencer (modprobe snd-seq) or use --backend jack",
        "jack": "start a JACK server (or PipeWire's JACK), then --backend jack",
        "coremidi": "macOS only",
        "winmm": "Windows only; create loopMIDI ports and pass --in/--out",
    }
    for backend in BACKENDS:
        try:
            inputs, outputs = list_ports(backend)
        except PortError as exc:
            compiled = "built without" not in str(exc)
            detail = "cannot open now" if compiled else "not in this python-rtmidi build"
            if compiled and backend == default_backend():
                detail += " (the default backend)"
            out.append(Check(WARN if compiled else OK, f"MIDI {backend}", detail,
                             fixes[backend]))  # fmt: skip
            continue
        usable = True
        detail = f"works ({len(inputs)} inputs, {len(outputs)} outputs visible)"
        if backend == "winmm":
            loop = [p for p in inputs if "loopmidi" in p.lower() or "ostinato" in p.lower()]
            if not loop:
                detail += "; no loopMIDI port: create two and pass --in/--out"
        out.append(Check(OK, f"MIDI {backend}", detail))
    if not usable:
        out.append(Check(FAIL, "MIDI", "no backend can open ports now",
                         "start JACK (jackd -d dummy works without a sound card) or load the "
                         "ALSA sequencer"))  # fmt: skip
    return out, usable


def check_model(model_dir: Path) -> list[Check]:
    from ostinato.engine.engine import CARD_FILE, MODEL_FILE, Engine, ModelError

    try:
        card = json.loads((model_dir / CARD_FILE).read_text())
        for name, key in ((MODEL_FILE, "sha256"), (card.get("decode_file"), "decode_sha256")):
            if not name:
                continue
            digest = hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
            if card.get(key) not in (None, digest):
                return [Check(FAIL, "model", f"{model_dir / name} does not match card.json",
                              "reinstall, or export the model again")]  # fmt: skip
        engine = Engine(model_dir, device="auto", verify_hash=False)
    except (OSError, ValueError, ModelError) as exc:
        return [Check(FAIL, "model", str(exc), "pass --model with an exported model folder")]
    vocab = engine.vocab
    meters = (", ".join(f"{n}/{d}" for n, d in vocab.meters) if vocab.has_meters
              else "4/4 only (no time signatures)")  # fmt: skip
    styles = "styles" if vocab.has_styles else "no styles"
    out = [Check(OK, "model", f"{model_dir} ({card.get('parameters', '?'):,} parameters, "
                 f"vocabulary {vocab.size} = tokenizer.json, sha256 ok; meters {meters}; "
                 f"{styles})")]  # fmt: skip
    import onnxruntime as ort

    if engine.device == "cuda":
        out.append(Check(OK, "inference", "CUDA (onnxruntime-gpu)"))
    else:
        why = ("onnxruntime has no CUDA provider (pip install onnxruntime-gpu instead of "
               "onnxruntime)" if "CUDAExecutionProvider" not in ort.get_available_providers()
               else "CUDA provider present but not usable")  # fmt: skip
        out.append(Check(OK, "inference", f"CPU ({why})"))
    return out


def check_config(path: str | None) -> tuple[list[Check], Config]:
    """The config file ``ostinato run`` would read (or ``path``), checked by the schema."""
    from ostinato.config import ConfigError, default_config_path, load_config

    if not path:
        default = default_config_path()
        if not default.exists():
            return [Check(OK, "config", f"none (defaults; `ostinato run` reads {default} "
                                        "when it exists)")], Config()  # fmt: skip
        path = str(default)
    try:
        config = load_config(path)
    except ConfigError as exc:
        return [Check(FAIL, "config", str(exc), "fix the file")], Config()
    return [Check(OK, "config", f"{path} is valid")], config


def check_osc_port(host: str = "127.0.0.1", port: int = 9000) -> list[Check]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return [Check(WARN, "OSC port", f"udp {host}:{port} is taken",
                          "another daemon running? use --osc-port")]  # fmt: skip
    return [Check(OK, "OSC port", f"udp {host}:{port} is free (for the control server)")]


def check_realtime(priority: int = 5) -> list[Check]:
    """Whether the note sender may use SCHED_FIFO at ``priority`` (tried on a scratch thread)."""
    import os
    import threading

    if not hasattr(os, "sched_setscheduler"):
        return [Check(OK, "real-time", "not available on this platform: normal priority")]
    if priority == 0:
        return [Check(OK, "real-time", "off (rt_priority = 0): the note sender runs at "
                      "normal priority")]  # fmt: skip
    result: dict = {}

    def attempt() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
            result["ok"] = True
        except OSError as exc:
            result["error"] = exc.strerror

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    if result.get("ok"):
        return [Check(OK, "real-time", f"the note sender can run at SCHED_FIFO {priority}")]
    return [Check(WARN, "real-time", f"SCHED_FIFO {priority} refused ({result.get('error')}): "
                  "notes may come late when the CPU is busy",
                  "allow rtprio as for JACK, e.g. add yourself to the audio group")]  # fmt: skip


def run_doctor(
    model_dir: Path | None = None, config_path: str | None = None
) -> tuple[list[Check], int]:
    """Every check; ``model_dir`` None: the config file's model, else the bundled one."""
    config_checks, config = check_config(config_path)
    values = {name: SETTINGS[name].default for name in SETTINGS} | config.values
    model = model_dir or values["model"] or Path(str(default_model_dir()))
    checks = check_python()
    midi, _ = check_midi()
    checks += midi + check_model(model) + config_checks
    if values["osc"]:
        checks += check_osc_port(values["osc_host"], values["osc_port"])
    checks += check_realtime(values["rt_priority"])
    return checks, 1 if any(c.status == FAIL for c in checks) else 0
