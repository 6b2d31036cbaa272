"""The settings schema: property tests (any valid value survives a trip through a TOML file;
any value out of range or of the wrong type is refused naming the key), the three ways a
value is read (file, command line, OSC), and the schema agreeing with the code it serves."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import tomlkit
import tomllib
from hypothesis import given
from hypothesis import strategies as st

from ostinato.config import ConfigError, parse_config
from ostinato.model.sampling import SamplingSettings
from ostinato.settings import (
    DAEMON,
    GENERATION,
    KNOBS,
    LIVE,
    SCHEMA,
    SETTINGS,
    GenerationSettings,
    Setting,
    SettingError,
    format_commit,
    setting,
    validate,
)

TOML_INT_MAX = 2**63 - 1
METERS = ["2/4", "3/4", "4/4", "5/4", "6/8", "7/8", "9/8", "12/8", "5/16", "2/2"]


def valid(s: Setting) -> st.SearchStrategy:
    """Values a config file may hold for ``s``, as TOML would give them back."""
    if s.kind == "float" and s.step:  # whole multiples of the step, as floats or TOML ints
        first = math.floor(s.lo / s.step) + 1 if s.lo_open else math.ceil(s.lo / s.step)
        steps = st.integers(first, math.floor(s.hi / s.step)).map(lambda n: n * s.step)
        words = st.sampled_from(["bar", " Bar "]) if s.bar else st.nothing()
        return steps | steps.filter(float.is_integer).map(int) | words
    if s.kind == "float":
        return st.floats(s.lo, s.hi, exclude_min=s.lo_open, allow_nan=False)
    if s.kind in ("int", "seed"):
        return st.integers(int(s.lo or 0), int(s.hi) if s.hi is not None else TOML_INT_MAX)
    if s.kind == "bool":
        return st.booleans()
    if s.kind == "choice":
        return st.sampled_from(s.choices)
    if s.kind == "programs":
        return st.lists(st.integers(-1, 127), min_size=1, max_size=8)
    if s.kind == "meter":
        return st.sampled_from(METERS)
    instrument = st.sampled_from(["keys", "guitar", "bass", "pad", "lead", "other", "drums"]) | (
        st.integers(0, 127).map(str)
    )
    if s.kind == "out_channels":
        return st.dictionaries(instrument, st.integers(1, 16), max_size=5)
    if s.kind == "in_channels":
        return st.dictionaries(st.integers(1, 16).map(str), instrument, max_size=5)
    if s.kind == "path":
        part = st.text(st.characters(codec="utf-8", exclude_characters="/\x00~"), min_size=1)
        return st.lists(part, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
    return st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1)


def normalized(s: Setting, value):
    if s.bar and isinstance(value, str):
        return None  # "bar"
    if s.kind == "float":
        return float(value)
    if s.kind == "programs":
        return tuple(sorted(set(value)))
    if s.kind == "path":
        return Path(value)
    if s.kind in ("out_channels", "in_channels"):
        return s.check(value)  # over the default map
    return value


def out_of_range(s: Setting) -> st.SearchStrategy:
    below = st.nothing()
    if s.lo is not None:
        if s.kind == "float":
            below = st.floats(max_value=s.lo, exclude_max=not s.lo_open, allow_nan=False,
                              allow_infinity=False)  # fmt: skip
        else:
            below = st.integers(-TOML_INT_MAX, int(s.lo) - 1)
    above = st.nothing()
    if s.hi is not None:
        if s.kind == "float":
            above = st.floats(min_value=s.hi, exclude_min=True, allow_nan=False,
                              allow_infinity=False)  # fmt: skip
        else:
            above = st.integers(int(s.hi) + 1, TOML_INT_MAX)
    return below | above


NUMERIC = [s.name for s in SCHEMA if s.kind in ("float", "int", "seed")]


def toml_text(name: str, value) -> str:
    text = tomlkit.dumps({name: list(value) if isinstance(value, tuple) else value})
    assert tomllib.loads(text)[name] is not None
    return text


@pytest.mark.parametrize("name", list(SETTINGS))
@given(data=st.data())
def test_any_valid_value_comes_back_from_a_toml_file_as_itself(name, data):
    s = SETTINGS[name]
    value = data.draw(valid(s), label=name)
    config = parse_config(tomllib.loads(toml_text(name, value)))
    assert config.values == {name: normalized(s, value)}
    assert s.check(config.values[name]) == config.values[name]  # a fixed point


@pytest.mark.parametrize("name", NUMERIC)
@given(data=st.data())
def test_any_value_out_of_range_is_refused_naming_the_key(name, data):
    s = SETTINGS[name]
    value = data.draw(out_of_range(s), label=name)
    with pytest.raises(ConfigError) as refused:
        parse_config(tomllib.loads(toml_text(name, value)))
    message = str(refused.value)
    assert message.startswith(f"{name} must be {s.expects()}, got "), message
    assert str(value) in message or f"{value:g}" in message or repr(value) in message


@pytest.mark.parametrize("name", [s.name for s in SCHEMA if s.kind != "str"])
@given(value=st.one_of(st.lists(st.integers(200, 300), min_size=1), st.text(min_size=1),
                       st.booleans(), st.floats(allow_nan=False)))  # fmt: skip
def test_a_wrong_type_is_refused_naming_the_key(name, value):
    s = SETTINGS[name]
    try:
        s.check(value)
    except SettingError as exc:
        assert str(exc).startswith(f"{name} must be "), str(exc)
        return
    # accepted: then it is a value of the setting's own type (or "auto", in any case)
    if s.auto and isinstance(value, str) and value.strip().lower() == "auto":
        return
    if s.off and (value is False or (isinstance(value, str) and value.strip().lower() == "off")):
        return  # "off", or false in the file: the thing is not done
    if s.bar and isinstance(value, str) and value.strip().lower() == "bar":
        return  # "bar": once per bar (commit)
    kinds = {"float": float, "int": int, "seed": int, "bool": bool, "choice": str,
             "meter": str, "path": str, "programs": (list, str),
             "out_channels": (dict, str), "in_channels": (dict, str)}  # fmt: skip
    # (programs: a list, or the text form "drums,33" the command line and OSC take too)
    assert isinstance(value, kinds[s.kind]), (name, value)
    assert type(value) is not bool or s.kind == "bool"


STEPPED = [s.name for s in SCHEMA if s.step]


@pytest.mark.parametrize("name", STEPPED)
@given(data=st.data())
def test_a_value_off_the_step_is_refused_naming_the_key(name, data):
    s = SETTINGS[name]
    value = data.draw(st.floats(s.lo, s.hi, exclude_min=s.lo_open).filter(
        lambda x: not (x / s.step).is_integer()), label=name)  # fmt: skip
    with pytest.raises(ConfigError) as refused:
        parse_config(tomllib.loads(toml_text(name, value)))
    assert str(refused.value) == f"{name} must be {s.expects()}, got {value!r}"
    assert s.expects().endswith(f", a multiple of {s.step:g}")


@given(word=st.text(min_size=3, max_size=20))
def test_unknown_keys_are_refused_with_a_did_you_mean(word):
    if word in SETTINGS:
        return
    with pytest.raises(ConfigError, match="unknown setting"):
        parse_config({word: 1})


def test_a_typo_gets_the_setting_it_meant():
    for typo, meant in (("temprature", "temperature"), ("topk", "top_k"),
                        ("repetition_penality", "repetition_penalty"), ("bmp", "bpm"),
                        ("key-lock", "key_lock"), ("osc_prot", "osc_port")):  # fmt: skip
        with pytest.raises(SettingError, match=f"did you mean '{meant}'"):
            setting(typo)


# -- the command line and OSC read through the same checks -------------------------------------
def test_text_from_the_command_line():
    assert SETTINGS["top_k"].from_text("40") == 40
    assert SETTINGS["programs"].from_text("drums,33,33") == (-1, 33)
    assert SETTINGS["programs"].from_text("auto") is None
    assert SETTINGS["seed"].from_text("none") is None
    assert SETTINGS["meter"].from_text("7/8") == "7/8"
    for name, text, message in (
        ("top_k", "2.0", "top_k must be a whole number ≥ 0, got '2.0'"),
        ("rt_priority", "99", "rt_priority must be a whole number from 0 to 98, got 99"),
        ("bpm", "fast", "bpm must be a number from 20 to 400 BPM, got 'fast'"),
        ("clock", "daw", "clock must be one of midi, link, auto, internal, got 'daw'"),
        ("programs", "drums,piano", "programs must be a list of GM programs"),
    ):
        with pytest.raises(SettingError) as refused:
            SETTINGS[name].from_text(text)
        assert str(refused.value).startswith(message), str(refused.value)


def test_osc_arguments():
    assert SETTINGS["temperature"].from_osc((0.550000011920929,)) == 0.55
    assert SETTINGS["top_k"].from_osc((12.0,)) == 12  # controllers that send only floats
    assert SETTINGS["key_lock"].from_osc(("off",)) is False
    assert SETTINGS["key_lock"].from_osc((1,)) is True
    assert SETTINGS["seed"].from_osc(("none",)) is None
    assert SETTINGS["seed"].from_osc((-1,)) is None
    assert SETTINGS["programs"].from_osc((33, -1)) == (-1, 33)
    assert SETTINGS["programs"].from_osc(("auto",)) is None
    for name, args in (("temperature", (True,)), ("top_k", (2.5,)), ("mode", (1,)),
                       ("key_lock", (0.5,)), ("programs", ()), ("bars", (1, 2))):  # fmt: skip
        with pytest.raises(SettingError, match=f"^{name} "):
            SETTINGS[name].from_osc(args)


def test_auto_is_none_from_every_source():
    for name in ("bars", "loop_bars"):
        s = SETTINGS[name]
        assert s.check("auto") is None and s.check(" Auto ") is None and s.check(None) is None
        assert s.from_text("auto") is None and s.from_text("AUTO") is None
        assert s.from_osc(("auto",)) is None
        assert s.check(8) == s.from_text("8") == s.from_osc((8.0,)) == 8
        assert s.expects() == "a whole number from 1 to 64 bars or auto"
    assert GenerationSettings(bars="auto", loop_bars="auto") == GenerationSettings(
        bars=None, loop_bars=None
    )
    for name in ("variation", "fill"):  # no auto: "auto" is refused
        with pytest.raises(SettingError, match=f"^{name} must be .*, got 'auto'$"):
            SETTINGS[name].check("auto")
        with pytest.raises(SettingError, match=f"^{name} must be .*, got 'auto'$"):
            SETTINGS[name].from_osc(("auto",))
    assert SETTINGS["variation"].from_osc((0.699999988079071,)) == 0.7
    assert SETTINGS["fill"].from_osc(("on",)) is True and SETTINGS["fill"].from_text("no") is False


COMMIT_EXPECTS = "bar or a number greater than 0 and at most 16 beats, a multiple of 0.5"
COMMIT_REFUSED = "^" + re.escape(f"commit must be {COMMIT_EXPECTS}, got ")


def test_commit_is_bar_or_a_number_of_beats_from_every_source():
    s = SETTINGS["commit"]
    assert (s.group, s.default, s.flag, s.osc_address) == (
        "generation", 1.0, "--commit", "/ostinato/commit"
    )  # fmt: skip
    assert s.expects() == s.expects(osc=True) == COMMIT_EXPECTS
    for bar in ("bar", " BAR ", None):
        assert s.check(bar) is None
    assert s.from_text("bar") is None and s.from_text("Bar") is None
    assert s.from_osc(("bar",)) is None
    for text, beats in (("0.5", 0.5), ("1", 1.0), ("1.5", 1.5), ("2", 2.0), ("16", 16.0)):
        assert s.from_text(text) == s.from_osc((text,)) == s.from_osc((beats,)) == beats
        assert s.check(beats) == beats and format_commit(beats) == text
    assert s.check(2) == 2.0 and type(s.check(2)) is float  # a TOML int is a fine number
    assert s.from_osc((1,)) == 1.0 and s.from_text("1.50") == 1.5
    assert format_commit(None) == "bar"
    for value in (0, 0.0, -1, -0.5, 0.25, 0.3, 1.75, 16.5, 17, 32, math.nan, math.inf, "soon",
                  "", "auto", "2", True, False, [1]):  # fmt: skip
        with pytest.raises(SettingError) as refused:
            s.check(value)
        assert str(refused.value).startswith(f"commit must be {COMMIT_EXPECTS}, got "), value
    with pytest.raises(SettingError, match=re.escape("got '2' (a string: write it without")):
        s.check("2")  # the file: a number is written bare
    for text in ("0", "-2", "0.25", "1/2", "16.5", "17", "never", "auto", "", "nan", "inf"):
        with pytest.raises(SettingError, match=COMMIT_REFUSED):
            s.from_text(text)
    for args in ((0,), (-1.0,), (0.3,), (0.25,), (20,), ("garbage",), ("0.25",), (True,),
                 (math.nan,)):  # fmt: skip
        with pytest.raises(SettingError, match=COMMIT_REFUSED):
            s.from_osc(args)
    for args in ((), (1, 2)):
        with pytest.raises(SettingError, match=f"^commit takes one argument, got {len(args)}$"):
            s.from_osc(args)


@given(steps=st.integers(1, 32))
def test_commit_as_text_comes_back_as_itself(steps):
    s, beats = SETTINGS["commit"], steps / 2
    assert s.from_text(format_commit(beats)) == beats == s.from_osc((format_commit(beats),))
    assert s.from_text(format_commit(None)) is None


def test_commit_is_a_generation_setting_that_defaults_to_a_beat():
    settings = GenerationSettings()
    assert settings.commit == 1.0  # re-planned every beat
    assert GenerationSettings(commit="bar").commit is None
    assert GenerationSettings(commit=1) == settings
    assert settings.replace(commit=2).commit == 2.0
    assert settings.replace(commit=0.5).replace(commit="bar").commit is None
    assert validate({"commit": 1}) == {"commit": 1.0}
    for bad in (0, 0.3, 20, "soon"):
        with pytest.raises(SettingError, match=r"^commit must be "):
            settings.replace(commit=bad)
    assert settings == GenerationSettings()


def test_variation_and_loop_bars_are_knobs():
    assert KNOBS["variation"].value(0) == 0.0 and KNOBS["variation"].value(127) == 1.0
    assert KNOBS["loop_bars"].value(0) == 1 and KNOBS["loop_bars"].value(127) == 16
    assert isinstance(KNOBS["loop_bars"].value(64), int)
    assert "fill" not in KNOBS  # a switch, not a knob


# -- the schema agrees with the code it describes ----------------------------------------------
def test_generation_settings_are_the_generation_group():
    assert [f.name for f in dataclasses.fields(GenerationSettings)] == [
        n for n in GenerationSettings.__dataclass_fields__
    ]
    assert set(GenerationSettings.__dataclass_fields__) == set(GENERATION) == set(LIVE)
    defaults = GenerationSettings()
    for name in GENERATION:
        assert getattr(defaults, name) == SETTINGS[name].default


def test_every_daemon_setting_reaches_the_daemon_config():
    from ostinato.daemon.daemon import DaemonConfig

    fields = {f.name: f for f in dataclasses.fields(DaemonConfig)}
    for name in DAEMON:
        target = {"model": "model_dir", "meter": "beats_per_bar", "osc": "osc_port"}.get(name, name)
        assert target in fields, name
        if target == name and SETTINGS[name].default is not None:
            assert fields[name].default == SETTINGS[name].default, name


def test_the_schema_and_the_sampler_agree_on_the_edges():
    for name in ("temperature", "top_p", "repetition_penalty"):
        s = SETTINGS[name]
        edges = [x for x in (s.lo, s.hi) if x is not None and not (x == s.lo and s.lo_open)]
        for edge in edges:
            SamplingSettings(**{name: edge})  # accepted by both
        for beyond in (math.nextafter(s.hi, math.inf), math.nextafter(s.lo, -math.inf)):
            with pytest.raises(ValueError):
                SamplingSettings(**{name: beyond})
            with pytest.raises(SettingError):
                s.check(beyond)


def test_the_tempo_range_is_the_clocks():
    from ostinato.daemon.clock import MAX_BPM, MIN_BPM

    assert (SETTINGS["bpm"].lo, SETTINGS["bpm"].hi) == (MIN_BPM, MAX_BPM)


def test_knobs_stay_inside_their_settings():
    for name, knob in KNOBS.items():
        for cc_value in (0, 64, 127):
            SETTINGS[name].check(knob.value(cc_value))


def test_flags_are_unique_and_every_live_setting_is_in_the_readme():
    flags = [s.flag for s in SCHEMA]
    assert len(flags) == len(set(flags))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in LIVE:
        assert f"`{SETTINGS[name].osc_address}`" in readme, name


def test_generation_settings_refuse_and_change_nothing():
    s = GenerationSettings()
    with pytest.raises(SettingError, match=re.escape("top_k must be a whole number ≥ 0, got 2.0")):
        s.replace(top_k=2.0)
    with pytest.raises(SettingError, match="unknown setting 'temprature'"):
        s.replace(temprature=0.5)
    with pytest.raises(SettingError, match="bpm is not a generation setting"):
        s.replace(bpm=100.0)
    assert s == GenerationSettings()


def test_style_and_guidance_are_generation_settings():
    style, guidance = SETTINGS["style"], SETTINGS["guidance"]
    assert (style.flag, style.osc_address) == ("--style", "/ostinato/style")
    assert (guidance.flag, guidance.osc_address) == ("--guidance", "/ostinato/guidance")
    assert style.default is None and guidance.default == 0.0  # auto, and guidance off
    assert style.from_text("auto") is None and style.from_text("dnb") == "dnb"
    assert style.from_osc(("lied",)) == "lied" and style.from_osc(("AUTO",)) is None
    assert validate({"style": "auto", "guidance": 2}) == {"style": None, "guidance": 2.0}
    with pytest.raises(SettingError, match="did you mean 'techno'"):
        style.check("tecno")
    assert GenerationSettings().replace(style="drums").style == "drums"
