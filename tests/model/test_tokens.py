from __future__ import annotations

import numpy as np
import pytest
from symusic import Score

from ostinato.model.tokens import (
    DRUM_PROGRAM,
    TOKENIZER_FILE,
    TokenType,
    Vocab,
    canonical_order,
    ids_to_score,
    load_tokenizer,
    new_tokenizer,
    save_tokenizer,
    score_to_ids,
    split_bars,
)
from tests.conftest import TPQ, make_band_score


def _notes(score: Score, tpq: int) -> list[tuple]:
    """(onset in beats, pitch, program, velocity) of every note."""
    out = []
    for track in score.tracks:
        program = DRUM_PROGRAM if track.is_drum else track.program
        for n in track.notes:
            out.append((n.time / tpq, n.pitch, program, n.velocity))
    return sorted(out)


def test_vocabulary_has_the_remi_plus_shape(vocab: Vocab) -> None:
    counts = {t: int((vocab.types == t).sum()) for t in TokenType}
    assert counts[TokenType.BAR] == 1
    assert counts[TokenType.POSITION] == 32  # 4/4 bar of 32nds
    assert counts[TokenType.PROGRAM] == 129  # drums (-1) and the 128 GM programs
    assert 16 <= counts[TokenType.VELOCITY] <= 32
    assert counts[TokenType.DURATION] > 0
    assert vocab.positions_per_bar(4) == 32
    assert vocab.positions_per_bar(3) == 24
    assert vocab.values[vocab.ids_of(TokenType.PROGRAM)].min() == DRUM_PROGRAM


def test_round_trip_keeps_every_note(tokenizer, vocab) -> None:
    score = make_band_score(bars=4)
    ids = score_to_ids(tokenizer, score)
    assert ids.dtype == np.uint16
    assert ids[0] == vocab.bar_id
    decoded = ids_to_score(tokenizer, ids)
    before = _notes(score, TPQ)
    after = _notes(decoded, decoded.ticks_per_quarter)
    assert len(before) == len(after)
    velocities = vocab.values[vocab.ids_of(TokenType.VELOCITY)]
    for (on_a, pitch_a, prog_a, vel_a), (on_b, pitch_b, prog_b, vel_b) in zip(
        before, after, strict=True
    ):
        assert on_b == pytest.approx(on_a, abs=1 / 16)  # within the 32nd grid
        assert (pitch_b, prog_b) == (pitch_a, prog_a)
        nearest_bin = velocities[np.argmin(np.abs(velocities - vel_a))]
        assert vel_b == nearest_bin


def _onset_orders(vocab: Vocab, ids: np.ndarray) -> list[list[tuple[int, int]]]:
    """(program, pitch) of each onset's notes, in token order."""
    out: list[list[tuple[int, int]]] = []
    kinds = vocab.types[ids]
    for i, t in enumerate(ids):
        if kinds[i] == TokenType.POSITION:
            out.append([])
        elif kinds[i] == TokenType.PROGRAM and i + 1 < len(ids) and kinds[i + 1] in (
            TokenType.PITCH, TokenType.PITCH_DRUM
        ):  # fmt: skip
            out[-1].append((int(vocab.values[t]), int(vocab.values[ids[i + 1]])))
    return out


def test_the_notes_of_an_onset_come_in_one_order_whatever_the_tracks(tokenizer, vocab) -> None:
    """Drums first, then by program, each instrument's from low to high: the same tokens
    whichever order a file gives its tracks, every note kept, and the order only within an
    onset (a bar's Bar and Positions stay where they are)."""
    score = make_band_score(bars=2)
    flipped = score.copy()
    flipped.tracks = score.tracks[::-1]  # drums last, the lead first
    ids, other = score_to_ids(tokenizer, score), score_to_ids(tokenizer, flipped)
    assert ids.tolist() == other.tolist()
    onsets = _onset_orders(vocab, ids)
    assert any(len(o) > 2 for o in onsets)
    for onset in onsets:
        assert onset == sorted(onset)  # (-1 …) drums first, then programs, pitches rising
    raw = np.asarray(tokenizer.encode(flipped).ids, dtype=np.uint16)
    assert sorted(raw.tolist()) == sorted(ids.tolist()) and not (raw == ids).all()
    assert ((vocab.types[raw] == TokenType.POSITION) == (vocab.types[ids] == TokenType.POSITION)
            ).all()  # fmt: skip
    assert canonical_order(vocab, ids).tolist() == ids.tolist()  # once is enough
    cut = raw[: len(raw) - 2]  # a note cut short at the end stays where it is
    assert canonical_order(vocab, cut)[-2:].tolist() == cut[-2:].tolist()


def test_split_bars_gives_one_chunk_per_bar(tokenizer, vocab) -> None:
    ids = score_to_ids(tokenizer, make_band_score(bars=3))
    bars = split_bars(ids, vocab.bar_id)
    assert len(bars) == 3
    assert all(b[0] == vocab.bar_id for b in bars)
    assert sum(len(b) for b in bars) == len(ids)


def test_tokenizer_json_round_trip(tmp_path, tokenizer) -> None:
    path = save_tokenizer(tokenizer, tmp_path)
    assert path.name == TOKENIZER_FILE
    loaded = load_tokenizer(tmp_path)
    assert loaded.vocab == tokenizer.vocab
    assert loaded.config.beat_res == tokenizer.config.beat_res
    assert loaded.config.num_velocities == tokenizer.config.num_velocities


def test_tokenizer_json_is_the_source_of_truth(tmp_path) -> None:
    """A tokenizer saved with other settings loads with those settings, not code defaults."""
    custom = new_tokenizer(velocity_bins=24)
    save_tokenizer(custom, tmp_path)
    assert load_tokenizer(tmp_path / TOKENIZER_FILE).config.num_velocities == 24


def test_bad_tokenizer_files_give_clear_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        load_tokenizer(tmp_path)
    (tmp_path / TOKENIZER_FILE).write_text("{ not json")
    with pytest.raises(ValueError, match="cannot read tokenizer"):
        load_tokenizer(tmp_path)


def test_velocity_bins_are_validated() -> None:
    with pytest.raises(ValueError, match="velocity_bins"):
        new_tokenizer(velocity_bins=8)


def bass_bar(tokenizer, vocab, onsets: list[tuple[int, int]]) -> list[int]:
    """A bar of bass notes, one per (position, pitch), as tokens."""
    first = int(np.flatnonzero(vocab.types == TokenType.POSITION)[0])
    out = [vocab.bar_id]
    for position, pitch in onsets:
        out += [first + position, tokenizer.vocab["Program_33"],
                tokenizer.vocab[f"Pitch_{pitch}"], tokenizer.vocab["Velocity_95"],
                tokenizer.vocab["Duration_0.4.8"]]  # fmt: skip
    return out


def test_places_counted_in_music_put_an_onset_at_one_place_in_every_bar(tokenizer, vocab) -> None:
    """A model's place in the bar counted in music: every token of a note is at its onset's
    place, and the same onset is at the same place in a bar that has more notes before it —
    where a count of tokens moves. The network (torch, a batch) and the engine (numpy, token
    by token, from a carried place) count alike."""
    from dataclasses import replace

    import torch

    from ostinato.model.network import ModelConfig, bar_offsets, next_places
    from ostinato.model.tokens import PlaceRule

    positions = np.flatnonzero(vocab.types == TokenType.POSITION)
    first = int(positions[0])
    rule = PlaceRule(vocab.bar_id, first, len(positions))

    def bar(onsets: list[tuple[int, int]]) -> list[int]:
        return bass_bar(tokenizer, vocab, onsets)

    sparse, busy = bar([(8, 40)]), bar([(0, 36), (2, 38), (4, 43), (8, 40)])
    tokens = np.asarray(sparse + busy, dtype=np.int64)
    places = rule.places(tokens)
    at_8 = [i for i, t in enumerate(tokens) if t == first + 8]
    assert [places[i : i + 5].tolist() for i in at_8] == [[9] * 5, [9] * 5]  # a note, its onset
    assert places[0] == 0 and places[len(sparse)] == 0  # a Bar
    counted = PlaceRule(vocab.bar_id).places(tokens)
    assert counted[at_8[0]] != counted[at_8[1]]  # in tokens, the busier bar moves the onset
    # one token at a time from a carried place, and a window that starts inside a bar
    last, stepped = 7, []
    for token in tokens[3:]:
        last = rule.after(last, int(token))
        stepped.append(last)
    assert stepped == rule.places(tokens[3:], start=7).tolist()
    assert rule.places(tokens[3:], start=7)[0] == 7  # a Pitch before any Position: carried
    # the network's count, whole windows and step by step
    cfg = ModelConfig(vocab_size=vocab.size, n_layer=1, n_head=1, d_model=8, d_ff=8,
                      bar_token=vocab.bar_id, position_token=first,
                      positions=len(positions))  # fmt: skip
    batch = torch.from_numpy(np.stack([tokens, tokens[::-1].copy()]))
    expected = np.stack([rule.places(tokens), rule.places(tokens[::-1])])
    np.testing.assert_array_equal(
        bar_offsets(batch, cfg.bar_token, 0, cfg.position_token, cfg.positions).numpy(), expected
    )
    place = torch.zeros(1, 1, dtype=torch.long)
    for i, token in enumerate(tokens):
        place = next_places(cfg, place, torch.tensor([[int(token)]]))
        assert int(place) == places[i]
    # a stride: onsets 8 places apart, a note's tokens counted from its onset within them
    strided = PlaceRule(vocab.bar_id, first, len(positions), stride=8)
    places = strided.places(tokens)
    assert [places[i : i + 5].tolist() for i in at_8] == [[72, 73, 74, 75, 76]] * 2
    assert places[len(sparse) : len(sparse) + 3].tolist() == [0, 8, 9]  # Bar, Position_0 …
    cfg = replace(cfg, place_stride=8)
    for start in (0, 5, 7, 21):  # from a carried place, inside a bar
        last, stepped, step = start, [], torch.tensor([[start]])
        for token in tokens[3:]:
            last = strided.after(last, int(token))
            step = next_places(cfg, step, torch.tensor([[int(token)]]))
            stepped.append(last)
            assert int(step) == last
        assert stepped == strided.places(tokens[3:], start=start).tolist()
        network = bar_offsets(torch.from_numpy(tokens[3:])[None], cfg.bar_token,
                              torch.tensor([start]), first, len(positions), 8)  # fmt: skip
        assert network[0].tolist() == stepped


def test_a_bar_played_again_is_echoed_token_by_token(tokenizer, vocab) -> None:
    """The echo of each token is the token that followed its place in the bar before: a bar
    played again is echoed token for token (each one hears the next one to come), a note
    added later in the bar does not shift the echoes of the notes after it, and the first
    bar of a window has none. Token by token (the engine), over the whole sequence and
    after a state rebuilt from a context (a truncation), and in the network's batch form."""
    import torch

    from ostinato.model.network import echo_tokens
    from ostinato.model.tokens import NO_PREVIOUS, BarEcho, PlaceRule, echoes

    positions = np.flatnonzero(vocab.types == TokenType.POSITION)
    first = int(positions[0])
    rule = PlaceRule(vocab.bar_id, first, len(positions), stride=8)

    def bar(onsets: list[tuple[int, int]]) -> list[int]:
        return bass_bar(tokenizer, vocab, onsets)

    riff = bar([(0, 36), (8, 40)])
    busier = bar([(0, 36), (4, 38), (8, 40)])
    tokens = np.asarray(riff + riff + busier + [vocab.bar_id], dtype=np.int64)
    places = rule.places(tokens)
    heard = echoes(tokens, places, vocab.bar_id)
    n = len(riff)
    assert (heard[:n] == NO_PREVIOUS).all()  # nothing before the first bar
    # the second bar hears the one it repeats: each token, the token after it there
    assert heard[n : 2 * n].tolist() == [*riff[1:], vocab.bar_id]
    # the busier bar: the added note's onset (4) was not in the bar before; the notes at 0 and
    # 8 still hear theirs, and the note at 0's last token hears "Position 8" as before
    third = heard[2 * n : 2 * n + len(busier) + 1].tolist()
    assert third[:6] == [*riff[1:6], first + 8]
    assert third[6:11] == [NO_PREVIOUS] * 5
    assert third[11:16] == [*riff[7:], vocab.bar_id]
    assert third[16] == riff[1]  # the next Bar hears what followed the Bar before
    # step by step, and from a state rebuilt at any point of the context
    echo = BarEcho(vocab.bar_id)
    stepped = [echo.step(int(t), int(p)) for t, p in zip(tokens, places, strict=True)]
    assert stepped == heard.tolist()
    for cut in range(1, len(tokens)):
        state = BarEcho.after(vocab.bar_id, tokens[:cut], places[:cut])
        copied = state.copy()
        assert state.steps(tokens[cut:], places[cut:]).tolist() == heard[cut:].tolist()
        # (the copy's state is its own: the steps of the one copied left it as it was)
        assert copied.steps(tokens[cut:], places[cut:]).tolist() == heard[cut:].tolist()
    # taken back inside the last bar: as if those steps had not been; across a Bar: refused
    played = tokens[:-1]  # up to the end of the busier bar
    last = int(np.flatnonzero(played == vocab.bar_id)[-1])
    for back in range(1, len(played) - last + 2):
        state = BarEcho(vocab.bar_id)
        state.steps(played, places[:-1])
        cut = len(played) - back
        ok = state.rewind(back, int(places[cut - 1]))
        assert ok == (cut > last)
        if ok:
            assert state.steps(tokens[cut:], places[cut:]).tolist() == heard[cut:].tolist()
    # the network's batch form, on the sequence and on a window that starts inside a bar
    window = tokens[3:]
    batch = torch.from_numpy(np.stack([tokens, np.concatenate((window, window[:3]))]))
    at = torch.from_numpy(np.stack([places, rule.places(batch[1].numpy())]))
    got = echo_tokens(batch, at, vocab.bar_id).numpy()
    np.testing.assert_array_equal(got[0], heard)
    np.testing.assert_array_equal(got[1], echoes(batch[1].numpy(), at[1].numpy(), vocab.bar_id))
