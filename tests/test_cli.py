from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ostinato.cli import main
from ostinato.settings import GenerationSettings
from tests.conftest import make_band_score
from tests.test_config import CONFIG_MISTAKES, MISTAKE_IDS


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ostinato", *args], capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_the_subcommands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in (
        "run",
        "ports",
        "doctor",
        "continue",
        "bench",
        "data",
        "train",
        "export",
        "eval",
        "gui",
    ):
        assert command in result.stdout


def test_data_build_via_cli(tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        make_band_score(bars=2, transpose=i).dump_midi(str(src / f"{i}.mid"))
    result = run_cli("data", "build", str(src), str(tmp_path / "out"), "--workers", "1")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files_used"] == 4
    assert "tokenizing" in result.stderr  # the progress bar


def test_cli_reports_errors_in_one_line(tmp_path) -> None:
    result = run_cli("data", "build", str(tmp_path / "missing"), str(tmp_path / "out"))
    assert result.returncode == 2
    assert "error: source folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_gui_without_a_display_says_so_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "ostinato", "gui", "--no-start"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no display" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_rt_priority_is_refused_before_any_port_opens(tmp_path) -> None:
    for args in (["--rt-priority", "120"], ["--rt-priority", "-1"]):
        result = run_cli("run", "--no-osc", *args)
        assert result.returncode == 2 and "rt_priority must be" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    config = tmp_path / "c.toml"
    config.write_text('rt_priority = "high"\n')
    result = run_cli("run", "--no-osc", "--config", str(config))
    assert result.returncode == 2 and "rt_priority must be" in result.stderr, result.stderr


@pytest.mark.parametrize(("line", "message"), CONFIG_MISTAKES, ids=MISTAKE_IDS)
def test_run_refuses_each_config_mistake_in_one_line(tmp_path, line, message) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"# mine\ntemperature = 0.7\n{line}\n")
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"ostinato run: error: {config}: {message}"]


def test_run_reads_the_default_config_file(tmp_path) -> None:
    """With no --config, the file under $XDG_CONFIG_HOME is read (and checked): not the
    tester's own."""
    default = tmp_path / "ostinato" / "config.toml"
    default.parent.mkdir()
    default.write_text("top_k = 2.0\n")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "ostinato", "run", "--no-osc"],
                            capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"ostinato run: error: {default}: top_k must be a whole number ≥ 0, got 2.0"
    ]


def test_a_bad_option_is_refused_with_the_schemas_words() -> None:
    result = run_cli("run", "--top-k", "2.0")
    assert result.returncode == 2
    assert "argument --top-k: top_k must be a whole number ≥ 0, got '2.0'" in result.stderr
    result = run_cli("continue", "in.mid", "-o", "out.mid", "--temperature", "9")
    assert result.returncode == 2
    assert "temperature must be a number from 0 to 5, got 9" in result.stderr


def test_options_win_over_the_file_and_everything_is_checked(tmp_path, monkeypatch) -> None:
    """What `ostinato run` hands the daemon: defaults, then the file, then the options."""
    import ostinato.daemon.daemon as daemon_module

    config = tmp_path / "config.toml"
    config.write_text(
        'temperature = 0.5\nbpm = 100\nmeter = "6/8"\nmode = "jam"\nprograms = [33, -1]\n'
        'rt_priority = 0\nlookahead_ms = 400\n[cc]\n21 = "temperature"\n"2:22" = "top_p"\n'
    )
    got = []
    monkeypatch.setattr(daemon_module, "run_daemon", lambda config: got.append(config) or 0)
    assert main(["run", "--config", str(config), "--temperature", "0.9", "--no-osc",
                 "--programs", "drums", "--seed", "7", "--clock", "internal"]) == 0  # fmt: skip
    (daemon,) = got
    assert daemon.settings == GenerationSettings(
        temperature=0.9, mode="jam", programs=(-1,), seed=7
    )
    assert (daemon.bpm, daemon.beats_per_bar, daemon.clock) == (100.0, 3.0, "internal")
    assert (daemon.rt_priority, daemon.lookahead_ms, daemon.osc_port) == (0, 400.0, None)
    assert daemon.cc_map == {(None, 21): "temperature", (1, 22): "top_p"}
    assert daemon.config_path == config and daemon.model_dir.name == "default"
