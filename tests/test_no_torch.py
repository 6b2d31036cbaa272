"""The base install runs the daemon without torch: nothing on the runtime path imports it
(nor aalink, which only a daemon that joins a Link session loads)."""

from __future__ import annotations

import subprocess
import sys

RUNTIME_MODULES = [
    "ostinato.cli",
    "ostinato.settings",
    "ostinato.bench",
    "ostinato.bench_realtime",
    "ostinato.doctor",
    "ostinato.model.tokens",
    "ostinato.model.grammar",
    "ostinato.model.sampling",
    "ostinato.model.corpus",
    "ostinato.model.ngram",
    "ostinato.evaluate.continuation",
    "ostinato.evaluate.loop",
    "ostinato.evaluate.jam",
    "ostinato.evaluate.accompany",
    "ostinato.evaluate.rolls",
    "ostinato.loops.generate",
    "ostinato.loops.heldout",
    "ostinato.engine.engine",
    "ostinato.daemon.clock",
    "ostinato.daemon.recorder",
    "ostinato.daemon.scheduler",
    "ostinato.daemon.planner",
    "ostinato.daemon.ports",
    "ostinato.engine.offline",
    "ostinato.daemon.daemon",
    "ostinato.daemon.link",
]

# Make `import torch` fail loudly, then import every runtime module.
PROGRAM = """
import importlib, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch imported on the runtime path: " + name)
sys.meta_path.insert(0, Block())
for module in {modules!r}:
    importlib.import_module(module)
from ostinato.cli import main
for argv in (["--help"], ["run", "--help"], ["continue", "--help"]):
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code == 0
from pathlib import Path
from ostinato.engine.engine import Engine
from ostinato.engine.offline import continue_score
from ostinato.model.sampling import SamplingSettings
from symusic import Note, Score, Track
score = Score(480)
track = Track(program=0, is_drum=True)
for i in range(16):
    track.notes.append(Note(i * 240, 60, 36 if i % 4 == 0 else 42, 100))
score.tracks.append(track)
engine = Engine(Path(__import__("ostinato").__file__).parent / "assets" / "default")
result = continue_score(engine, score, 1, SamplingSettings(), seed=0)
assert result.notes
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
assert "aalink" not in sys.modules  # Ableton Link loads only when a daemon joins a session
print("ok")
"""


def test_runtime_path_never_imports_torch() -> None:
    """Import every runtime module and continue a loop with the bundled model, with torch
    made unimportable."""
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(modules=RUNTIME_MODULES)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
