from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import make_band_score


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
