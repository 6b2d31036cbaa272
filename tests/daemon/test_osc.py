"""The OSC contract against a real daemon process on a real JACK server: every settings
address, bad values (refused with the schema's words), unknown addresses, a bundle stamped
an hour ahead (dispatched at once), panic, status, subscribe, MIDI CC learn through the
daemon's input port, and the take actions (regenerate, keep, undo)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

import pytest
import tomllib
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from ostinato.control_client import ControlClient, ControlError, state_dict
from tests.daemon.jack_rig import DAEMON_IN, DAEMON_OUT, REPO, JackServer, Probe, daemon_command


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("osc")
    config = tmp / "config.toml"
    config.write_text('# my settings\ntemperature = 0.7\n\n[cc]\n20 = "top_p"  # the big knob\n')
    server = JackServer(f"ostinato-osc-{os.getpid()}")
    port = free_udp_port()
    log = (tmp / "daemon.log").open("w")
    proc = server.spawn(
        daemon_command("--config", str(config), "--osc-port", str(port), "--clock", "internal"),
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    server.wait_for(lambda: DAEMON_IN in server.ports(), 60, "the daemon's ports never appeared")
    client = ControlClient(port=port)
    server.wait_for(lambda: _answers(client), 30, "the OSC server never answered")
    try:
        yield server, proc, client, config, tmp / "daemon.log"
        client.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    finally:
        log.close()
        server.close()  # whatever happened: no JACK server left behind


def _answers(client: ControlClient) -> bool:
    try:
        client.status(timeout=0.5)
        return True
    except ControlError:
        return False


GOOD = [
    ("temperature", (1.3,), "temperature", 1.3),
    ("temperature", (1,), "temperature", 1.0),  # an int is a fine number
    ("top_k", (12,), "top_k", 12),
    ("key_lock", (0,), "key_lock", 0),
    ("key_lock", ("on",), "key_lock", 1),
    ("top_p", (0.8,), "top_p", 0.8),
    ("repetition_penalty", (1.2,), "repetition_penalty", 1.2),
    ("mode", ("jam",), "mode", "jam"),
    ("programs", ("drums,33",), "programs", "drums,33"),
    ("programs", (33, -1),  "programs", "drums,33"),
    ("programs", ("auto",), "programs", "auto"),
    ("bars", (8,), "bars", 8),
    ("bars", ("auto",), "bars", "auto"),
    ("bars", (4.0,), "bars", 4),  # controllers that send only floats
    ("variation", (0.7,), "variation", 0.7),
    ("variation", (0,), "variation", 0.0),
    ("variation", (0.3,), "variation", 0.3),
    ("loop_bars", (8,), "loop_bars", 8),
    ("loop_bars", (2.0,), "loop_bars", 2),
    ("loop_bars", ("auto",), "loop_bars", "auto"),
    ("fill", (1,), "fill", 1),
    ("fill", ("off",), "fill", 0),
    ("phrase_bars", (4,), "phrase_bars", 4),
    ("seed", (5,), "seed", 5),
    ("seed", ("none",), "seed", "none"),
    ("style", ("lofi",), "style", "lofi"),
    ("style", ("auto",), "style", "auto"),
    ("style", ("none",), "style", "none"),
    ("guidance", (1.5,), "guidance", 1.5),
    ("guidance", (0,), "guidance", 0.0),
    ("density", (2.0,), "density", 2.0),
    ("density", (1.25,), "density", 1.25),
    ("commit", (2,), "commit", 2.0),
    ("commit", (0.5,), "commit", 0.5),
    ("commit", ("1",), "commit", 1.0),  # the number as text
    ("commit", (16.0,), "commit", 16.0),
    ("commit", ("bar",), "commit", "bar"),
]  # fmt: skip


@pytest.mark.parametrize(("address", "args", "key", "expected"), GOOD)
def test_every_setting_address_changes_the_running_daemon(daemon, address, args, key, expected):
    _, _, client, _, _ = daemon
    client.set(address, *args)
    value = client.status()[key]
    if isinstance(expected, float):
        assert value == pytest.approx(expected, rel=1e-6)
    else:
        assert value == expected


BAD = [  # the whole reason, as the schema words it (the config file's words, OSC's types)
    ("temperature", (5.5,), "temperature must be a number from 0 to 5, got 5.5"),
    ("temperature", ("hot",), "temperature must be a number from 0 to 5, got 'hot'"),
    ("temperature", (), "temperature takes one argument, got 0"),
    ("temperature", (float("nan"),), "temperature must be a number from 0 to 5, got nan"),
    ("top_k", (2.5,), "top_k must be a whole number ≥ 0, got 2.5"),
    ("key_lock", (2,), "key_lock must be 1 or 0 (on or off), got 2"),
    ("key_lock", ("maybe",), "key_lock must be 1 or 0 (on or off), got 'maybe'"),
    ("style", ("polka",), "style must be one of house, techno, hiphop, dnb, pop, lofi, lied, "
                          "quartet, drums, none or auto, got 'polka'"),
    ("guidance", (-1.0,), "guidance must be a number from 0 to 8, got -1.0"),
    ("top_k", (-1,), "top_k must be a whole number ≥ 0, got -1"),
    ("top_p", (1.5,), "top_p must be a number greater than 0 and at most 1, got 1.5"),
    ("repetition_penalty", (0.5,), "repetition_penalty must be a number from 1 to 3, got 0.5"),
    ("mode", ("solo",), "mode must be one of continue, jam, loop, got 'solo'"),
    ("mode", ("jamm",), "got 'jamm' (did you mean 'jam'?)"),
    ("mode", (3,), "mode must be one of continue, jam, loop, got 3"),
    ("programs", ("drums,piano",), "programs must be 'auto', a list like 'drums,33', or GM "
                                   "program numbers (-1 = drums), got 'drums,piano'"),
    ("programs", (200,), "programs must be .*, got \\[200\\]"),
    ("bars", (0,), "bars must be a whole number from 1 to 64 bars or auto, got 0"),
    ("bars", ("forever",), "bars must be a whole number from 1 to 64 bars or auto, got 'forever'"),
    ("variation", (1.5,), "variation must be a number from 0 to 1, got 1.5"),
    ("variation", (-0.1,), "variation must be a number from 0 to 1, got -0.1"),
    ("variation", ("auto",), "variation must be a number from 0 to 1, got 'auto'"),
    ("loop_bars", (0,), "loop_bars must be a whole number from 1 to 64 bars or auto, got 0"),
    ("loop_bars", (65,), "loop_bars must be a whole number from 1 to 64 bars or auto, got 65"),
    ("loop_bars", (2.5,), "loop_bars must be a whole number from 1 to 64 bars or auto, got 2.5"),
    ("loop_bars", (4, 4), "loop_bars takes one argument, got 2"),
    ("fill", (2,), "fill must be 1 or 0 (on or off), got 2"),
    ("fill", ("maybe",), "fill must be 1 or 0 (on or off), got 'maybe'"),
    ("phrase_bars", (100,), "phrase_bars must be a whole number from 1 to 64 bars, got 100"),
    ("seed", (1.5,), "seed must be a whole number ≥ 0, got 1.5"),
]  # fmt: skip


@pytest.mark.parametrize(("address", "args", "reason"), BAD)
def test_bad_values_get_an_error_and_change_nothing(daemon, address, args, reason):
    _, _, client, _, _ = daemon
    before = client.status()
    with pytest.raises(ControlError, match=reason if ".*" in reason else re.escape(reason)):
        client.set(address, *args)
    after = client.status()
    settings = ("temperature", "top_k", "top_p", "repetition_penalty", "mode", "programs",
                "bars", "phrase_bars", "seed", "key_lock", "variation", "loop_bars",
                "fill", "density", "commit")  # fmt: skip
    assert {k: after[k] for k in settings} == {k: before[k] for k in settings}


COMMIT = "commit must be bar or a number greater than 0 and at most 16 beats, a multiple of 0.5"
BAD_COMMITS = [((0,), "0.0"), ((-2.0,), "-2.0"), ((0.25,), "0.25"), ((20,), "20.0"),
               (("soon",), "'soon'"), (("0.3",), "0.3"), (("",), "''")]  # fmt: skip


def test_a_bad_commit_is_refused_and_changes_nothing(daemon):
    _, _, client, _, _ = daemon
    client.set("commit", 2.0)  # not the default: a refusal must leave it, not reset it
    try:
        for args, got in BAD_COMMITS:
            with pytest.raises(ControlError, match=re.escape(f"{COMMIT}, got {got}") + "$"):
                client.set("commit", *args)
            assert client.status()["commit"] == 2.0, args
        with pytest.raises(ControlError, match="commit takes one argument, got 2"):
            client.set("commit", 1, 2)
        assert client.status()["commit"] == 2.0
        client.set("commit", "bar")
        assert client.status()["commit"] == "bar"
    finally:
        client.set("commit", 1)  # the default again, for the tests after
    assert client.status()["commit"] == 1.0


def test_unknown_address_and_garbage_datagrams(daemon):
    _, proc, client, _, _ = daemon
    with pytest.raises(ControlError, match="unknown address"):
        client.request("/ostinato/volume", 1.0)
    with pytest.raises(ControlError, match="unknown address"):
        client.request("/something/else")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for junk in (b"", b"\x00" * 7, b"/ostinato/temperature\x00\x00\x00,f\x00", os.urandom(900)):
            sock.sendto(junk, client.target)
    time.sleep(0.2)
    assert proc.poll() is None
    assert client.status()["backend"] == "jack"  # still answering


def test_status_has_the_whole_state(daemon):
    _, _, client, _, _ = daemon
    state = client.status()
    for key in ("temperature", "top_k", "top_p", "repetition_penalty", "mode", "programs",
                "bars", "phrase_bars", "seed", "running", "clock", "bpm", "beat",
                "beats_per_bar", "bar_ms_p99", "deadline_misses", "notes_sent", "in_port",
                "out_port", "backend", "device", "cc", "variation", "fill", "loop_bars",
                "loop_length", "loop_first_bar", "loop_from", "fallbacks", "kept", "takes",
                "last_take", "density", "commit"):  # fmt: skip
        assert key in state, key
    assert state["clock"] == "internal" and state["running"] == 1
    assert state["bpm"] == pytest.approx(120.0)


def test_subscribe_pushes_changes_and_heartbeats(daemon):
    _, _, client, _, _ = daemon
    pushed: list[tuple[str, list]] = []
    watcher = ControlClient(
        port=client.target[1], on_message=lambda a, args: pushed.append((a, args))
    )
    try:
        watcher.send("/ostinato/subscribe")
        time.sleep(0.5)
        beats = [args for a, args in pushed if a == "/ostinato/heartbeat"]
        assert len(beats) >= 3  # ten a second
        bpm, bar, beat, running, _, misses = beats[-1]
        assert misses >= 0
        assert bpm == pytest.approx(120.0) and running == 1 and 0 <= beat < 4 and bar >= 0
        client.set("temperature", 0.55)  # another client's change reaches the subscriber
        time.sleep(0.3)
        states = [state_dict(args) for a, args in pushed if a == "/ostinato/state"]
        assert states and states[-1]["temperature"] == pytest.approx(0.55)
        watcher.send("/ostinato/unsubscribe")
        time.sleep(0.3)
        count = len(pushed)
        time.sleep(0.4)
        assert len(pushed) == count  # nothing after unsubscribe
    finally:
        watcher.close()


def test_a_bundle_stamped_an_hour_ahead_does_not_delay_panic(daemon):
    """python-osc's own dispatcher sleeps on the server thread until a bundle's timetag: the
    panic sent after this bundle would wait an hour (the request times out after 2 s)."""
    _, _, client, _, log_path = daemon
    bundle = OscBundleBuilder(time.time() + 3600)
    message = OscMessageBuilder("/ostinato/temperature")
    message.add_arg(0.42)
    bundle.add_content(message.build())
    client.sock.sendto(bundle.build().dgram, client.target)
    start = time.perf_counter()
    client.request("/ostinato/panic", timeout=2.0)
    reply_ms = (time.perf_counter() - start) * 1000
    print(f"panic acknowledged {reply_ms:.1f} ms after it was sent, behind the bundle")
    assert reply_ms < 250, reply_ms
    # the bundle itself was dispatched at once (timetags are ignored, never slept on)
    assert client.status()["temperature"] == pytest.approx(0.42)
    assert "panic: every note released" in log_path.read_text()


def test_panic_reaches_the_daemon(daemon):
    server, _, client, _, log_path = daemon
    probe = Probe("osc-probe")
    try:
        server.connect(DAEMON_OUT, probe.in_port)
        client.set("mode", "jam")
        client.set("programs", "drums,33")
        server.wait_for(lambda: len(probe.notes()) > 4, 30, "the daemon never played")
        # the start of the JACK cycle under way: anything the daemon writes after the request
        # is stamped in a later cycle (probe.now() estimates the frame from the clock, ahead
        # of the cycles when the dummy driver runs late on a loaded machine)
        sent_at = probe.client.last_frame_time / probe.rate
        client.request("/ostinato/panic")
        time.sleep(0.3)
        assert "panic: every note released" in log_path.read_text()
        sounding: dict[tuple[int, int], float] = {}
        released = []
        for t, m in probe.notes():
            key = (m[0] & 0x0F, m[1])
            if m[0] & 0xF0 == 0x90 and m[2] > 0 and t < sent_at:
                sounding[key] = t
            elif m[0] & 0xF0 in (0x80, 0x90) and key in sounding:
                if t >= sent_at:
                    released.append(t - sent_at)
                del sounding[key]
        assert not sounding, f"still sounding after panic: {sounding}"
        assert all(delay < 0.1 for delay in released), released
        cc123 = [t for t, m in probe.snapshot() if m[0] & 0xF0 == 0xB0 and m[1] == 123]
        assert any(0 <= t - sent_at < 0.1 for t in cc123), (
            "no All Notes Off after panic",
            [t - sent_at for t in cc123],
            released,
        )
    finally:
        client.set("mode", "continue")
        probe.close()


def _send_cc(client: ControlClient, probe: Probe, message: list[int], key: str, expected,
             tries: int = 3) -> None:  # fmt: skip
    """Send a CC and wait for ``key`` to read ``expected`` in the status. A CC is sent again
    only when the daemon says the backend lost MIDI input meanwhile (an xrun on a loaded
    machine drops what came in then, as it would drop a knob's one move): a CC that arrived
    and did not drive the setting fails."""
    for _ in range(tries):
        gaps = client.status()["input_gaps"]
        probe.send(message)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            state = client.status()
            if state[key] == pytest.approx(expected):
                return
            time.sleep(0.05)
        if state["input_gaps"] == gaps:
            break
    assert state[key] == pytest.approx(expected), (message, key, state["input_gaps"])


def test_midi_cc_learn_drives_a_setting_and_is_saved(daemon):
    server, _, client, config, _ = daemon
    probe = Probe("cc-probe")
    try:
        server.connect(probe.out_port, DAEMON_IN)
        time.sleep(0.2)
        # the CC already in the config file drives top_p on any channel: 127 → 1.0
        _send_cc(client, probe, [0xB3, 20, 127], "top_p", 1.0)
        client.request("/ostinato/learn", "temperature")
        assert client.status()["learning"] == "temperature"
        probe.send([0xB0, 123, 0])  # All Notes Off (a DAW's Stop): a channel-mode CC, not learned
        time.sleep(0.3)
        assert client.status()["learning"] == "temperature"
        # the knob moved: CC 21 on channel 1 is learned, 0 → 0.1
        _send_cc(client, probe, [0xB0, 21, 0], "temperature", 0.1)
        state = client.status()
        assert state["learning"] == ""
        assert state["cc"] == "20:top_p,1:21:temperature"
        _send_cc(client, probe, [0xB0, 21, 127], "temperature", 2.0)
        probe.send([0xB1, 21, 0])  # CC 21 on channel 2 is another knob: nothing changes
        time.sleep(0.3)
        assert client.status()["temperature"] == pytest.approx(2.0)
        saved = tomllib.loads(config.read_text())
        assert saved["cc"] == {"20": "top_p", "1:21": "temperature"}
        text = config.read_text()
        assert saved["temperature"] == 0.7 and text.startswith("# my settings")
        assert '20 = "top_p"  # the big knob' in text  # the user's comment is kept
        assert sorted(p.name for p in config.parent.glob(".config.toml.*")) == []  # no temp file
        with pytest.raises(ControlError, match="learn takes"):
            client.request("/ostinato/learn", "mode")  # not a knob
        client.request("/ostinato/unlearn", "top_p")
        assert tomllib.loads(config.read_text())["cc"] == {"1:21": "temperature"}
    finally:
        probe.close()


def test_midi_cc_learn_drives_variation_and_loop_bars(daemon):
    server, _, client, config, _ = daemon
    probe = Probe("cc-probe-loop")
    try:
        server.connect(probe.out_port, DAEMON_IN)
        time.sleep(0.2)
        for setting, cc, values in (("variation", 25, [(0, 0.0), (127, 1.0), (64, 0.504)]),
                                    ("loop_bars", 26, [(127, 16), (0, 1), (64, 9)])):  # fmt: skip
            client.request("/ostinato/learn", setting)
            assert client.status()["learning"] == setting
            for value, expected in values:
                _send_cc(client, probe, [0xB2, cc, value], setting, expected)  # channel 3
            assert f"3:{cc}:{setting}" in client.status()["cc"].split(",")
        saved = tomllib.loads(config.read_text())["cc"]
        assert saved["3:25"] == "variation" and saved["3:26"] == "loop_bars"
        for setting in ("variation", "loop_bars"):
            client.request("/ostinato/unlearn", setting)
        assert not {"3:25", "3:26"} & set(tomllib.loads(config.read_text()).get("cc", {}))
    finally:
        client.set("loop_bars", "auto")
        client.set("variation", 0.3)
        probe.close()


def test_take_actions_regenerate_keep_undo(daemon):
    """The three take addresses on a running daemon: refused with a reason when there is
    nothing to act on, answered with what was done otherwise, counted in the status."""
    _, _, client, _, log_path = daemon
    with pytest.raises(ControlError, match="nothing to undo"):
        client.request("/ostinato/undo")
    with pytest.raises(ControlError, match="nothing is kept"):
        client.request("/ostinato/keep", 0)
    refused = "keep takes 1 (keep the bar playing now) or 0 (release every kept bar), got 2"
    with pytest.raises(ControlError, match=re.escape(refused)):
        client.request("/ostinato/keep", 2)
    with pytest.raises(ControlError, match="regenerate takes no argument"):
        client.request("/ostinato/regenerate", 1)
    client.set("mode", "continue")
    with pytest.raises(ControlError, match="no answer is playing"):
        client.request("/ostinato/regenerate")
    takes = client.status()["takes"]
    try:
        client.set("mode", "jam")
        client.set("programs", "drums,33")
        client.set("loop_bars", 2)
        kept = None
        end = time.monotonic() + 20
        while kept is None:  # a bar Ostinato plays in jam mode, at a known place in the loop
            try:
                _, kept = client.request("/ostinato/keep", 1)
            except ControlError:
                assert time.monotonic() < end, "nothing to keep after 20 s"
                time.sleep(0.25)
        assert re.fullmatch(r"bar \d+ is kept at loop place [12]: it plays again each pass",
                            kept[1]), kept  # fmt: skip
        state = client.status()
        assert state["kept"] in ("1", "2") and state["takes"] == takes + 1
        assert state["last_take"] == f"keep loop place {state['kept']}"
        _, done = client.request("/ostinato/regenerate")
        assert re.fullmatch(r"bar \d+: its take is thrown away and generated again now|"
                            r"bar \d+ begins too soon and plays as prepared; the next pass at "
                            r"loop place [12] is a new take|"
                            r"bar \d+ will be a new take \(nothing was prepared for it yet\)",
                            done[1]), done  # fmt: skip
        print(f"regenerate: {done[1]}")
        assert client.status()["last_take"].startswith("regenerate bar ")
        _, undone = client.request("/ostinato/undo")
        assert undone[1].startswith("undo regenerate bar ")
        _, undone = client.request("/ostinato/undo")
        assert undone[1] == f"undo keep loop place {state['kept']}: released"
        state = client.status()
        assert state["kept"] == "" and state["takes"] == takes + 4
        log = log_path.read_text()
        assert "take: keep: bar " in log and "take: regenerate: " in log
        assert "take: undo keep loop place" in log
    finally:
        client.set("mode", "continue")
        client.set("programs", "auto")
        client.set("loop_bars", "auto")
        for _ in range(8):  # a failure above leaves no take behind for the next test
            try:
                client.request("/ostinato/undo")
            except ControlError:
                break


def test_a_learned_button_triggers_a_take_action(daemon):
    """``/ostinato/learn undo``: the next CC is a button for it (the press that teaches it
    does not fire it); each press (≥ 64 after < 64) fires it once, here with nothing to
    undo, which the daemon logs."""
    server, _, client, config, log_path = daemon
    probe = Probe("cc-probe-take")
    said = "CC 41 → undo: nothing to undo"
    try:
        server.connect(probe.out_port, DAEMON_IN)
        time.sleep(0.2)
        client.request("/ostinato/learn", "undo")
        assert client.status()["learning"] == "undo"
        probe.send([0xB0, 41, 127])
        time.sleep(0.3)
        state = client.status()
        assert state["learning"] == "" and "1:41:undo" in state["cc"].split(",")
        assert said not in log_path.read_text()
        probe.send([0xB0, 41, 0])  # released, pressed again: fired once
        probe.send([0xB0, 41, 127])
        probe.send([0xB0, 41, 100])  # still held
        time.sleep(0.3)
        assert log_path.read_text().count(said) == 1
        assert tomllib.loads(config.read_text())["cc"]["1:41"] == "undo"
        with pytest.raises(ControlError, match=r"learn takes .*regenerate, keep, undo"):
            client.request("/ostinato/learn", "redo")
        client.request("/ostinato/unlearn", "undo")
        assert "1:41" not in tomllib.loads(config.read_text()).get("cc", {})
    finally:
        probe.close()
