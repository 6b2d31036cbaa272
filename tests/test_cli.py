from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_a_context_longer_than_the_training_window_is_refused_in_one_line(tmp_path) -> None:
    """A context longer than the bundled model's training window (its card's) is refused
    before any port opens; one too short for a bar, by the schema."""
    card = Path(__file__).resolve().parents[1] / "ostinato/assets/default/card.json"
    window = json.loads(card.read_text())["window"]
    result = run_cli("run", "--no-osc", "--no-record", "--context", "4096", "--clock", "internal")
    assert result.returncode == 2, result.stderr
    assert f"context 4096 is longer than the {window} tokens" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("run", "--no-osc", "--context", "16")
    assert result.returncode == 2 and "context must be" in result.stderr, result.stderr


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


def test_run_takes_the_loop_and_answer_options(tmp_path, monkeypatch) -> None:
    """--variation, --loop-bars N|auto, --fill/--no-fill and --bars auto, over the file's."""
    import ostinato.daemon.daemon as daemon_module

    config = tmp_path / "config.toml"
    config.write_text("variation = 0.6\nloop_bars = 8\nfill = true\nbars = 2\n")
    got = []
    monkeypatch.setattr(daemon_module, "run_daemon", lambda config: got.append(config) or 0)
    assert main(["run", "--config", str(config), "--no-osc"]) == 0
    assert main(["run", "--config", str(config), "--no-osc", "--variation", "0.25",
                 "--loop-bars", "auto", "--no-fill", "--bars", "auto"]) == 0  # fmt: skip
    assert main(["run", "--config", str(config), "--no-osc", "--loop-bars", "4", "--fill",
                 "--variation", "0", "--bars", "6"]) == 0  # fmt: skip
    file, auto, given = (c.settings for c in got)
    assert file == GenerationSettings(variation=0.6, loop_bars=8, fill=True, bars=2)
    assert auto == GenerationSettings(variation=0.25, loop_bars=None, fill=False, bars=None)
    assert given == GenerationSettings(variation=0.0, loop_bars=4, fill=True, bars=6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loop-bars", "0"],
         "argument --loop-bars: loop_bars must be a whole number from 1 to 64 bars or auto, "
         "got 0"),
        (["--loop-bars", "often"], "loop_bars must be a whole number from 1 to 64 bars or auto, "
                                   "got 'often'"),
        (["--variation", "1.5"], "argument --variation: variation must be a number from 0 to 1"),
        (["--variation", "auto"], "variation must be a number from 0 to 1, got 'auto'"),
        (["--bars", "0"], "argument --bars: bars must be a whole number from 1 to 64 bars or "
                          "auto, got 0"),
        (["--fill", "1"], "unrecognized arguments: 1"),
    ],
)  # fmt: skip
def test_bad_loop_and_answer_options_are_refused(args, message, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--no-osc", *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_run_takes_the_commit_option(tmp_path, monkeypatch, capsys) -> None:
    """--commit bar|N over the file's commit, every source checked by the schema."""
    import ostinato.daemon.daemon as daemon_module

    config = tmp_path / "config.toml"
    config.write_text("commit = 2\n")
    got = []
    monkeypatch.setattr(daemon_module, "run_daemon", lambda config: got.append(config) or 0)
    assert main(["run", "--config", str(config), "--no-osc"]) == 0
    assert main(["run", "--config", str(config), "--no-osc", "--commit", "bar"]) == 0
    assert main(["run", "--config", str(config), "--no-osc", "--commit", "0.5"]) == 0
    config.write_text("")
    assert main(["run", "--config", str(config), "--no-osc"]) == 0
    assert main(["run", "--config", str(config), "--no-osc", "--commit", "1"]) == 0
    file, bar, half, default, one = (c.settings for c in got)
    assert file == GenerationSettings(commit=2.0) and file.commit == 2.0
    assert bar.commit is None and half.commit == 0.5 and one.commit == 1.0
    assert default == GenerationSettings() and default.commit == 1.0  # a beat
    capsys.readouterr()
    for text, got_text in (("0", "0.0"), ("0.3", "0.3"), ("17", "17.0"), ("often", "'often'")):
        with pytest.raises(SystemExit) as exited:
            main(["run", "--no-osc", "--commit", text])
        assert exited.value.code == 2
        assert (
            "argument --commit: commit must be bar or a number greater than 0 and at most 16 "
            f"beats, a multiple of 0.5, got {got_text}"
        ) in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert "--commit bar|BEATS" in usage and "(default 1)" in usage


def test_continue_takes_variation_and_bars(tmp_path, monkeypatch, capsys) -> None:
    """`ostinato continue` hands --variation and --bars (None for auto) to continue_file."""
    from types import SimpleNamespace

    import ostinato.engine.engine as engine_module
    import ostinato.engine.offline as offline

    calls = []

    def continue_file(engine, src, dst, **options):
        calls.append(options)
        return SimpleNamespace(input_bars=2, notes=[], context_bars=2)

    monkeypatch.setattr(engine_module, "Engine", lambda *args, **kwargs: "engine")
    monkeypatch.setattr(offline, "continue_file", continue_file)
    src, dst = str(tmp_path / "in.mid"), str(tmp_path / "out.mid")
    assert main(["continue", src, "-o", dst]) == 0
    assert main(["continue", src, "-o", dst, "--variation", "0.7", "--bars", "auto"]) == 0
    assert main(["continue", src, "-o", dst, "--variation", "0", "--bars", "8"]) == 0
    assert [(c["variation"], c["bars"]) for c in calls] == [(0.3, 4), (0.7, None), (0.0, 8)]
    out = capsys.readouterr().out.splitlines()
    assert "4 bars generated" in out[0] and "an answer as long as the phrase generated" in out[1]
    with pytest.raises(SystemExit):
        main(["continue", src, "-o", dst, "--variation", "2"])
    assert "variation must be a number from 0 to 1" in capsys.readouterr().err


def test_style_guidance_and_meter_reach_the_daemon_and_continue(tmp_path, monkeypatch,
                                                                  capsys) -> None:  # fmt: skip
    """--style NAME|auto and --guidance for run, continue and eval; --meter as (n, d)."""
    from types import SimpleNamespace

    import ostinato.daemon.daemon as daemon_module
    import ostinato.engine.engine as engine_module
    import ostinato.engine.offline as offline
    import ostinato.evaluate.continuation as evaluate_module

    got = []
    monkeypatch.setattr(daemon_module, "run_daemon", lambda config: got.append(config) or 0)
    config = tmp_path / "config.toml"
    config.write_text('style = "house"\nmeter = "6/8"\n')
    assert main(["run", "--config", str(config), "--no-osc"]) == 0
    assert main(["run", "--config", str(config), "--no-osc", "--style", "auto", "--guidance",
                 "1.5", "--meter", "7/8"]) == 0  # fmt: skip
    file, given = got
    assert file.settings == GenerationSettings(style="house") and file.meter == (6, 8)
    assert file.beats_per_bar == 3.0
    assert given.settings == GenerationSettings(style=None, guidance=1.5)
    assert (given.meter, given.beats_per_bar) == ((7, 8), 3.5)

    calls = []

    def continue_file(engine, src, dst, **options):
        calls.append(options)
        return SimpleNamespace(input_bars=2, notes=[], context_bars=2)

    monkeypatch.setattr(engine_module, "Engine", lambda *args, **kwargs: "engine")
    monkeypatch.setattr(offline, "continue_file", continue_file)
    src, dst = str(tmp_path / "in.mid"), str(tmp_path / "out.mid")
    assert main(["continue", src, "-o", dst]) == 0
    assert main(["continue", src, "-o", dst, "--style", "lied", "--guidance", "2"]) == 0
    assert [(c["style"], c["guidance"]) for c in calls] == [(None, 0.0), ("lied", 2.0)]

    evaluated = []
    monkeypatch.setattr(evaluate_module, "evaluate",
                        lambda *args, **kwargs: evaluated.append(kwargs) or {})  # fmt: skip
    monkeypatch.setattr(evaluate_module, "format_table", lambda report: "")
    assert main(["eval", "m", "d", "--style", "quartet", "--guidance", "0.5"]) == 0
    assert (evaluated[0]["style"], evaluated[0]["guidance"]) == ("quartet", 0.5)

    with pytest.raises(SystemExit):
        main(["continue", src, "-o", dst, "--style", "polka"])
    assert "style must be one of house, techno" in capsys.readouterr().err
