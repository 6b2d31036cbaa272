from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.daemon.jack_rig import JackServer

MODEL = Path(__file__).resolve().parents[1] / "ostinato" / "assets" / "default"


def doctor(env: dict | None, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ostinato", "doctor", *args],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip


def test_doctor_tells_the_truth(tmp_path) -> None:
    jack = JackServer(f"ostinato-doctor-{id(tmp_path)}")
    try:
        ready = doctor(jack.env)
        assert ready.returncode == 0, ready.stdout
        assert "[  ok] MIDI jack: works" in ready.stdout
        assert "vocabulary 396 = tokenizer.json, sha256 ok" in ready.stdout
        assert "[  ok] inference: CPU" in ready.stdout or "CUDA" in ready.stdout
        assert "real-time: the note sender can run at SCHED_FIFO 5" in ready.stdout or (
            "[warn] real-time: SCHED_FIFO 5 refused" in ready.stdout
        )

        broken = tmp_path / "model"
        shutil.copytree(MODEL, broken)
        (broken / "model.onnx").write_bytes(b"not a model")
        result = doctor(jack.env, "--model", str(broken))
        assert result.returncode == 1
        assert "[FAIL] model:" in result.stdout and "does not match card.json" in result.stdout

        bad = tmp_path / "bad.toml"
        bad.write_text("temperature = -3\n")
        result = doctor(jack.env, "--config", str(bad))
        assert result.returncode == 1 and "[FAIL] config:" in result.stdout
        card = json.loads((MODEL / "card.json").read_text())
        assert f"{card['parameters']:,} parameters" in ready.stdout
    finally:
        jack.close()
    # With the server gone, only an ALSA sequencer (if this machine has one) can open ports.
    gone = doctor(jack.env)
    assert "[warn] MIDI jack: cannot open now" in gone.stdout
    if "[  ok] MIDI alsa: works" in gone.stdout:
        assert gone.returncode == 0
    else:
        assert gone.returncode == 1
        assert "[FAIL] MIDI: no backend can open ports now" in gone.stdout
