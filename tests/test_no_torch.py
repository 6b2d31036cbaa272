"""The base install runs the daemon without torch: nothing on the runtime path imports it."""

from __future__ import annotations

import subprocess
import sys

RUNTIME_MODULES = [
    "ostinato.cli",
    "ostinato.model.tokens",
    "ostinato.model.grammar",
    "ostinato.model.corpus",
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
try:
    main(["--help"])
except SystemExit as exc:
    assert exc.code == 0
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
print("ok")
"""


def test_runtime_path_never_imports_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(modules=RUNTIME_MODULES)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
