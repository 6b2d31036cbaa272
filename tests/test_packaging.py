"""Packaging: the wheel carries the bundled model and runs with no extras in a fresh venv; the
service units and the desktop entry parse; the example config is accepted."""

from __future__ import annotations

import configparser
import os
import plistlib
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from ostinato.cli import main
from ostinato.config import default_config_path, load_config

REPO = Path(__file__).resolve().parents[1]
PACKAGING = REPO / "packaging"
LOOP = REPO / "tests" / "data" / "gmd_drummer1_funk-groove1_138_beat.mid"


@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_continues_a_loop(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(dist), str(REPO)],
        check=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = dist.glob("ostinato-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for part in ("model.onnx", "decode.onnx", "tokenizer.json", "card.json", "MODEL_CARD.md",
                 "NOTICE"):  # fmt: skip
        assert f"ostinato/assets/default/{part}" in names, part
    assert not any(n.startswith("tests/") for n in names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)], check=True)
    check_torch = [python, "-c", "import importlib.util as u; print(u.find_spec('torch'))"]
    assert subprocess.run(check_torch, capture_output=True, text=True).stdout.strip() == "None"

    out = tmp_path / "out.mid"
    result = subprocess.run(
        [env_dir / "bin" / "ostinato", "continue", str(LOOP), "-o", str(out), "--bars", "2",
         "--seed", "3"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    import symusic

    score = symusic.Score(str(out))
    assert sum(len(t.notes) for t in score.tracks) > 0


def test_systemd_unit_verifies(tmp_path):
    unit = (PACKAGING / "ostinato.service").read_text()
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str
    parser.read_string(unit)
    assert parser["Service"]["ExecStart"].split()[1:3] == ["run", "--config"]
    assert parser["Install"]["WantedBy"] == "default.target"
    if shutil.which("systemd-analyze") is None:
        return  # the parse above is all this machine can check
    # %h (the home folder) → a folder whose ~/.local/bin/ostinato is the installed command
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "ostinato").symlink_to(shutil.which("ostinato"))
    copy = tmp_path / "ostinato.service"
    copy.write_text(unit.replace("%h", str(home)))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_launchd_plist_parses():
    with (PACKAGING / "org.ostinato.daemon.plist").open("rb") as fh:
        plist = plistlib.load(fh)
    assert plist["Label"] == "org.ostinato.daemon"
    assert plist["ProgramArguments"][1:3] == ["run", "--config"]
    assert plist["RunAtLoad"] is True


def test_desktop_entry_is_valid():
    path = PACKAGING / "ostinato.desktop"
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(path)
    entry = parser["Desktop Entry"]
    assert entry["Exec"] == "ostinato gui" and entry["Type"] == "Application"
    if shutil.which("desktop-file-validate"):
        result = subprocess.run(["desktop-file-validate", str(path)], capture_output=True,
                                text=True)  # fmt: skip
        assert result.returncode == 0 and not result.stdout.strip(), result.stdout


def test_example_config_is_accepted(capsys):
    path = PACKAGING / "config.toml"
    config = load_config(path)
    assert config.cc_map == {} and config.values["temperature"] == 0.2
    assert "commit" in config.values and config.values["commit"] == 1.0
    assert main(["doctor", "--config", str(path)]) in (0, 1)  # 1: no MIDI backend here
    assert f"{path} is valid" in capsys.readouterr().out


def test_the_units_use_the_config_path_the_daemon_reads(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_path() == tmp_path / "ostinato" / "config.toml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert str(default_config_path()).endswith(os.path.join(".config", "ostinato", "config.toml"))
    assert "%h/.config/ostinato/config.toml" in (PACKAGING / "ostinato.service").read_text()
