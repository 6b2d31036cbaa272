"""``ostinato doctor`` against a real JACK server, with a temporary HOME (never the tester's
own ~/.config): each line says what this machine can do, the real-time line agrees with what
the OS grants (asked in a process of its own), and each config mistake fails in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon.jack_rig import JackServer
from tests.test_config import CONFIG_MISTAKES, LOOP_MISTAKES, MISTAKE_IDS

MODEL = Path(__file__).resolve().parents[1] / "ostinato" / "assets" / "default"


def home_env(tmp_path: Path, base: dict | None = None) -> dict:
    """The environment with a fresh, empty HOME (and no XDG_CONFIG_HOME pointing elsewhere)."""
    env = dict(base if base is not None else os.environ)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)
    env.pop("XDG_CONFIG_HOME", None)
    return env


def doctor(env: dict | None, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ostinato", "doctor", *args],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip


def fifo_granted(priority: int) -> bool:
    """What the OS says, asked in a process of its own (doctor asks in its own)."""
    ask = f"import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param({priority}))"
    return subprocess.run([sys.executable, "-c", ask], capture_output=True).returncode == 0


def test_doctor_tells_the_truth(tmp_path) -> None:
    jack = JackServer(f"ostinato-doctor-{id(tmp_path)}")
    env = home_env(tmp_path, jack.env)
    try:
        ready = doctor(env)
        assert ready.returncode == 0, ready.stdout
        assert "[  ok] MIDI jack: works" in ready.stdout
        vocab_size = json.loads((MODEL / "card.json").read_text())["model"]["vocab_size"]
        assert f"vocabulary {vocab_size} = tokenizer.json, sha256 ok" in ready.stdout
        assert "[  ok] inference: CPU" in ready.stdout or "CUDA" in ready.stdout
        default = Path(env["HOME"]) / ".config" / "ostinato" / "config.toml"
        assert f"[  ok] config: none (defaults; `ostinato run` reads {default} " in ready.stdout
        if fifo_granted(5):
            assert "[  ok] real-time: the note sender can run at SCHED_FIFO 5" in ready.stdout
        else:
            assert "[warn] real-time: SCHED_FIFO 5 refused" in ready.stdout

        broken = tmp_path / "model"
        shutil.copytree(MODEL, broken)
        (broken / "model.onnx").write_bytes(b"not a model")
        result = doctor(env, "--model", str(broken))
        assert result.returncode == 1
        assert "[FAIL] model:" in result.stdout and "does not match card.json" in result.stdout

        # the file `ostinato run` would read is the one checked: here, the temporary HOME's
        default.parent.mkdir(parents=True)
        default.write_text("temperature = -3\nrt_priority = 0\n")
        result = doctor(env)
        assert result.returncode == 1
        assert (f"[FAIL] config: {default}: temperature must be a number from 0 to 5, got -3 "
                "— fix the file") in result.stdout  # fmt: skip
        default.write_text("rt_priority = 0\n")
        result = doctor(env)
        assert result.returncode == 0 and f"[  ok] config: {default} is valid" in result.stdout
        assert "[  ok] real-time: off (rt_priority = 0)" in result.stdout
        card = json.loads((MODEL / "card.json").read_text())
        assert f"{card['parameters']:,} parameters" in ready.stdout
    finally:
        jack.close()
    # With the server gone, only an ALSA sequencer (if this machine has one) can open ports.
    gone = doctor(env)
    assert "[warn] MIDI jack: cannot open now" in gone.stdout
    if "[  ok] MIDI alsa: works" in gone.stdout:
        assert gone.returncode == 0
    else:
        assert gone.returncode == 1
        assert "[FAIL] MIDI: no backend can open ports now" in gone.stdout


@pytest.mark.parametrize(("line", "message"), CONFIG_MISTAKES, ids=MISTAKE_IDS)
def test_doctor_refuses_each_config_mistake_in_one_line(tmp_path, line, message) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"# mine\ntemperature = 0.7\n{line}\n")
    result = doctor(home_env(tmp_path), "--config", str(config))
    assert result.returncode == 1
    failed = [x for x in result.stdout.splitlines() if x.startswith("[FAIL] config")]
    assert failed == [f"[FAIL] config: {config}: {message} — fix the file"], result.stdout
    assert "is valid" not in result.stdout and "Traceback" not in result.stderr


def test_doctor_checks_the_loop_and_answer_settings(tmp_path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('variation = 0.2\nloop_bars = "auto"\nfill = true\nbars = "auto"\n')
    result = doctor(home_env(tmp_path), "--config", str(config))
    assert f"[  ok] config: {config} is valid" in result.stdout, result.stdout
    config.write_text("loop_bars = 8\n")
    result = doctor(home_env(tmp_path), "--config", str(config))
    assert f"[  ok] config: {config} is valid" in result.stdout, result.stdout
    for line, message in LOOP_MISTAKES[::2]:  # one doctor each: a few are enough here
        config.write_text(f"{line}\n")
        result = doctor(home_env(tmp_path), "--config", str(config))
        assert result.returncode == 1
        failed = [x for x in result.stdout.splitlines() if x.startswith("[FAIL] config")]
        assert failed == [f"[FAIL] config: {config}: {message} — fix the file"], result.stdout
