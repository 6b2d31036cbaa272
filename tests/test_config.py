"""The config file: every mistake refused with one line that names the key and the value;
the [cc] table in each TOML form; MIDI learn's writes keep the user's file and are atomic."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import tomllib
from hypothesis import given
from hypothesis import strategies as st

from ostinato.config import (
    ConfigError,
    default_config_path,
    load_config,
    parse_cc_key,
    save_cc_map,
)

# The five mistakes of issue 18, each with the one line that refuses it (after "<file>: ").
CONFIG_MISTAKES = [
    ('seed = "none"',
     "seed must be a whole number ≥ 0, got 'none' (leave seed out of the file for a new seed "
     "every bar)"),
    ("top_k = 2.0", "top_k must be a whole number ≥ 0, got 2.0"),
    ('bpm = "120"',
     "bpm must be a number from 20 to 400 BPM, got '120' (a string: write it without quotes)"),
    ("temprature = 0.5", "unknown setting 'temprature' (did you mean 'temperature'?)"),
    ('key_lock = "yes"',
     "key_lock must be true or false, got 'yes' (a string: write true or false without "
     "quotes)"),
]  # fmt: skip
MISTAKE_IDS = ["seed-none", "top_k-float", "bpm-string", "misspelt-key", "key_lock-string"]

# The loop and answer settings: their mistakes, each with its one line (after "<file>: ").
LOOP_MISTAKES = [
    ("variation = 1.5", "variation must be a number from 0 to 1, got 1.5"),
    ('variation = "auto"', "variation must be a number from 0 to 1, got 'auto'"),
    ("loop_bars = 0", "loop_bars must be a whole number from 1 to 64 bars or auto, got 0"),
    ('loop_bars = "8"',
     "loop_bars must be a whole number from 1 to 64 bars or auto, got '8' (a string: write it "
     "without quotes)"),
    ("loop_bars = 4.0", "loop_bars must be a whole number from 1 to 64 bars or auto, got 4.0"),
    ('fill = "yes"',
     "fill must be true or false, got 'yes' (a string: write true or false without quotes)"),
    ('bars = "forever"', "bars must be a whole number from 1 to 64 bars or auto, got 'forever'"),
]  # fmt: skip
LOOP_MISTAKE_IDS = ["variation-high", "variation-auto", "loop_bars-0", "loop_bars-string",
                    "loop_bars-float", "fill-string", "bars-word"]  # fmt: skip

# The commit horizon: its mistakes, each with its one line (after "<file>: ").
COMMIT = "commit must be bar or a number greater than 0 and at most 16 beats, a multiple of 0.5"
COMMIT_MISTAKES = [
    ("commit = 0", f"{COMMIT}, got 0"),
    ("commit = -1", f"{COMMIT}, got -1"),
    ("commit = 0.3", f"{COMMIT}, got 0.3"),
    ("commit = 0.25", f"{COMMIT}, got 0.25"),
    ("commit = 17", f"{COMMIT}, got 17"),
    ('commit = "2"', f"{COMMIT}, got '2' (a string: write it without quotes)"),
    ('commit = "often"', f"{COMMIT}, got 'often'"),
    ("commit = true", f"{COMMIT}, got true"),
]
COMMIT_MISTAKE_IDS = ["zero", "negative", "off-step", "quarter-beat", "too-long", "string",
                      "word", "bool"]  # fmt: skip


@pytest.mark.parametrize(("line", "message"), CONFIG_MISTAKES, ids=MISTAKE_IDS)
def test_each_mistake_is_refused_naming_the_key_and_the_value(tmp_path, line, message):
    path = tmp_path / "config.toml"
    path.write_text(f"temperature = 0.7\n{line}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(refused.value) == f"{path}: {message}"


def test_the_loop_and_answer_settings(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('variation = 0.2\nloop_bars = "auto"\nfill = true\nbars = "auto"\n')
    config = load_config(path)
    assert config.values == {"variation": 0.2, "loop_bars": None, "fill": True, "bars": None}
    assert config.generation() == config.values
    path.write_text("variation = 0\nloop_bars = 8\nfill = false\nbars = 16\n")
    assert load_config(path).values == {"variation": 0.0, "loop_bars": 8, "fill": False,
                                        "bars": 16}  # fmt: skip
    path.write_text('[cc]\n21 = "variation"\n"2:22" = "loop_bars"\n')  # knobs, as learned
    assert load_config(path).cc_map == {(None, 21): "variation", (1, 22): "loop_bars"}


@pytest.mark.parametrize(("line", "message"), LOOP_MISTAKES, ids=LOOP_MISTAKE_IDS)
def test_loop_and_answer_mistakes_are_refused_in_one_line(tmp_path, line, message):
    path = tmp_path / "config.toml"
    path.write_text(f"temperature = 0.7\n{line}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(refused.value) == f"{path}: {message}"


def test_commit_in_the_file(tmp_path):
    path = tmp_path / "config.toml"
    for text, commit in (('commit = "bar"', None), ('commit = "Bar"', None),
                         ("commit = 2", 2.0), ("commit = 0.5", 0.5), ("commit = 1.5", 1.5),
                         ("commit = 16", 16.0)):  # fmt: skip
        path.write_text(f"temperature = 0.7\n{text}\n")
        config = load_config(path)
        assert config.values == {"temperature": 0.7, "commit": commit}, text
        assert config.generation() == config.values and config.daemon() == {}
        assert type(config.values["commit"]) is (float if commit else type(None))


@pytest.mark.parametrize(("line", "message"), COMMIT_MISTAKES, ids=COMMIT_MISTAKE_IDS)
def test_commit_mistakes_are_refused_in_one_line(tmp_path, line, message):
    path = tmp_path / "config.toml"
    path.write_text(f"temperature = 0.7\n{line}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(refused.value) == f"{path}: {message}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mode = 'jamm'", "mode must be one of continue, jam, loop, got 'jamm' (did you mean "
                          "'jam'?)"),
        ("programs = [-1, 200]", "programs must be a list of GM programs 0 to 127 or -1 (drums), "
                                 "e.g. [-1, 33], got [-1, 200]"),
        ("programs = []", "programs must be a list"),
        ("meter = '4-4'", "meter must be a meter like 4/4, 3/4, 6/8 or 7/8, got '4-4'"),
        ("osc_port = true", "osc_port must be a whole number from 1 to 65535, got true"),
        ("top_p = 0", "top_p must be a number greater than 0 and at most 1, got 0"),
        ("temperature = nan", "temperature must be a number from 0 to 5, got nan"),
        ("[generation]\ntemperature = 1", "unknown setting 'generation'"),
        ("cc = 3", "cc must be a table of CC number = setting"),
        ("[cc]\n200 = 'temperature'", "[cc] key '200' must be a CC number 0 to 119"),
        ("[cc]\n123 = 'temperature'", "[cc] key '123': CC 120–127 are channel-mode messages"),
        ("[cc]\n'17:21' = 'temperature'", "[cc] key '17:21': the channel must be 1 to 16"),
        ("[cc]\n'0:21' = 'temperature'", "[cc] key '0:21': the channel must be 1 to 16"),
        ("[cc]\nknob = 'temperature'", "[cc] key 'knob' must be a CC number, or channel:CC"),
        ("[cc]\n21 = 'temprature'", "[cc] 21 = 'temprature': a CC can drive temperature, top_k,"),
        ("[cc]\n21 = 'mode'", "[cc] 21 = 'mode': a CC can drive"),
        ("[cc]\n21 = 'fill'", "[cc] 21 = 'fill': a CC can drive"),
    ],
)  # fmt: skip
def test_more_mistakes(tmp_path, text, message):
    path = tmp_path / "config.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(refused.value).startswith(f"{path}: {message}"), str(refused.value)
    assert "\n" not in str(refused.value)


def test_not_toml_and_missing_files(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("temperature = \n")
    with pytest.raises(ConfigError, match=re.escape(f"config file {path} is not valid TOML")):
        load_config(path)
    with pytest.raises(ConfigError, match=r"cannot read config file .*No such file"):
        load_config(tmp_path / "missing.toml")
    assert load_config(tmp_path / "missing.toml", missing_ok=True).values == {}


def test_the_cc_table_in_every_toml_form(tmp_path):
    forms = {
        "table": '[cc]\n21 = "temperature"\n"2:22" = "top_p"\n',
        "inline": 'cc = { 21 = "temperature", "2:22" = "top_p" }\n',
        "dotted": 'cc.21 = "temperature"\ncc."2:22" = "top_p"\n',
    }
    for name, text in forms.items():
        path = tmp_path / f"{name}.toml"
        path.write_text("temperature = 0.5\n" + text)
        config = load_config(path)
        assert config.cc_map == {(None, 21): "temperature", (1, 22): "top_p"}, name
        assert config.values == {"temperature": 0.5}


def test_values_are_normalized(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        'temperature = 1\nprograms = [33, -1, 33]\nmodel = "~/models/drums"\nbpm = 90\n'
        'meter = "7/8"\nseed = 0\nosc = false\n'
    )
    config = load_config(path)
    assert config.values["temperature"] == 1.0 and isinstance(config.values["temperature"], float)
    assert config.values["programs"] == (-1, 33)
    assert config.values["model"] == Path.home() / "models" / "drums"
    assert config.values["bpm"] == 90.0 and config.values["seed"] == 0
    assert config.generation() == {"temperature": 1.0, "programs": (-1, 33), "seed": 0}
    assert set(config.daemon()) == {"model", "bpm", "meter", "osc"}


# -- MIDI learn's writes -----------------------------------------------------------------------
USER_FILE = """\
# my settings: written by hand
temperature = 0.7  # warm
mode = "jam"

[cc]  # my knobs
20 = "top_p"  # the big one
21 = "bars"
"""


def test_save_keeps_comments_and_other_keys_and_learns_channels(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(USER_FILE)
    save_cc_map(path, {(None, 20): "top_p", (1, 22): "temperature"})
    text = path.read_text()
    assert text.startswith("# my settings: written by hand\ntemperature = 0.7  # warm\n")
    assert "[cc]  # my knobs\n" in text and '20 = "top_p"  # the big one\n' in text
    assert '21 = "bars"' not in text and '"2:22" = "temperature"' in text
    assert tomllib.loads(text) == {
        "temperature": 0.7,
        "mode": "jam",
        "cc": {"20": "top_p", "2:22": "temperature"},
    }
    assert load_config(path).cc_map == {(None, 20): "top_p", (1, 22): "temperature"}


def test_save_keeps_an_inline_table_inline(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('temperature = 0.7\ncc = { 20 = "top_p" }\nmode = "jam"  # after it\n')
    save_cc_map(path, {(None, 20): "top_p", (0, 21): "temperature"})
    text = path.read_text()
    assert text == (
        'temperature = 0.7\ncc = {20 = "top_p", "1:21" = "temperature"}\nmode = "jam"  # after it\n'
    )


def test_save_replaces_dotted_keys_and_makes_a_missing_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('temperature = 0.7\ncc.20 = "top_p"\n')
    save_cc_map(path, {(None, 21): "bars"})
    assert tomllib.loads(path.read_text()) == {"temperature": 0.7, "cc": {"21": "bars"}}
    fresh = tmp_path / "new" / "config.toml"
    save_cc_map(fresh, {(None, 21): "bars"})
    assert tomllib.loads(fresh.read_text()) == {"cc": {"21": "bars"}}


def test_save_is_atomic_and_keeps_the_file_mode(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text(USER_FILE)
    path.chmod(0o640)
    save_cc_map(path, {(None, 20): "top_p"})
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]
    before = path.read_text()

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        save_cc_map(path, {(None, 25): "temperature"})
    assert path.read_text() == before  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]  # no temp file left


def test_save_writes_through_a_symlink_and_refuses_a_broken_file(tmp_path):
    target = tmp_path / "dotfiles" / "ostinato.toml"
    target.parent.mkdir()
    target.write_text("temperature = 0.7\n")
    link = tmp_path / "config.toml"
    link.symlink_to(target)
    save_cc_map(link, {(None, 21): "bars"})
    assert link.is_symlink() and tomllib.loads(target.read_text())["cc"] == {"21": "bars"}
    target.write_text("temperature = \n")
    with pytest.raises(ConfigError, match=r"is not valid TOML .*the CC map is not saved"):
        save_cc_map(link, {(None, 22): "bars"})
    assert target.read_text() == "temperature = \n"


cc_keys = st.tuples(st.none() | st.integers(0, 15), st.integers(0, 119))
knobs = st.sampled_from(["temperature", "top_p", "top_k", "repetition_penalty", "bars",
                         "variation", "loop_bars"])  # fmt: skip


@given(cc_map=st.dictionaries(cc_keys, knobs, max_size=12))
def test_any_cc_map_saved_reads_back_the_same(tmp_path_factory, cc_map):
    path = tmp_path_factory.mktemp("cc") / "config.toml"
    path.write_text(USER_FILE)
    save_cc_map(path, cc_map)
    assert load_config(path).cc_map == cc_map
    assert "# my settings: written by hand" in path.read_text()


def test_cc_keys():
    assert parse_cc_key("21") == (None, 21) and parse_cc_key("16:0") == (15, 0)


def test_default_config_path_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_path() == tmp_path / "ostinato" / "config.toml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_config_path() == tmp_path / "home" / ".config" / "ostinato" / "config.toml"
