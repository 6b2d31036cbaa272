from __future__ import annotations

import numpy as np
import pytest

from ostinato.model.sampling import Sampler, SamplingSettings


def _draws(settings: SamplingSettings, logits, n=2000, mask=None, recent=None, seed=0):
    sampler = Sampler(settings, len(logits), seed=seed)
    return np.array([sampler.sample(logits, mask, recent) for _ in range(n)])


LOGITS = np.array([2.0, 1.0, 0.5, 0.0, -1.0, 3.0], dtype=np.float32)


def test_temperature_zero_is_greedy() -> None:
    assert set(_draws(SamplingSettings(temperature=0.0), LOGITS, n=20)) == {5}


def test_mask_is_respected() -> None:
    mask = np.array([0, 1, 0, 1, 0, 0], dtype=bool)
    assert set(_draws(SamplingSettings(temperature=2.0), LOGITS, mask=mask)) == {1, 3}
    assert set(_draws(SamplingSettings(temperature=0.0), LOGITS, n=5, mask=mask)) == {1}


def test_top_k_and_top_p() -> None:
    assert set(_draws(SamplingSettings(top_k=2), LOGITS)) == {0, 5}
    probs = np.exp(LOGITS) / np.exp(LOGITS).sum()  # 5: 0.57, 0: 0.21 -> top_p 0.7 keeps 2
    assert probs[5] < 0.7 < probs[5] + probs[0]
    assert set(_draws(SamplingSettings(top_p=0.7), LOGITS)) == {0, 5}


def test_temperature_changes_the_spread() -> None:
    low = _draws(SamplingSettings(temperature=0.3), LOGITS)
    high = _draws(SamplingSettings(temperature=2.0), LOGITS)
    assert (low == 5).mean() > 0.9
    assert (high == 5).mean() < 0.5
    assert len(set(high)) == 6


def test_repetition_penalty_lowers_recent_tokens() -> None:
    recent = np.array([5, 5, 5])
    plain = _draws(SamplingSettings(), LOGITS, recent=recent)
    penalized = _draws(SamplingSettings(repetition_penalty=2.0), LOGITS, recent=recent)
    assert (penalized == 5).mean() < (plain == 5).mean() - 0.2


def test_penalty_only_on_chosen_kinds() -> None:
    penalized_ids = np.zeros(6, dtype=bool)
    penalized_ids[0] = True  # only token 0 is a "pitch"
    settings = SamplingSettings(temperature=0.0, repetition_penalty=3.0)
    sampler = Sampler(settings, 6, penalized=penalized_ids)
    assert sampler.sample(LOGITS, recent=np.array([5])) == 5  # 5 is not penalized


def test_seeded_rng_repeats() -> None:
    a = _draws(SamplingSettings(), LOGITS, n=50, seed=3)
    b = _draws(SamplingSettings(), LOGITS, n=50, seed=3)
    assert (a == b).all()


def test_empty_mask_is_an_error() -> None:
    with pytest.raises(ValueError, match="allows no token"):
        Sampler(SamplingSettings(), 6).sample(LOGITS, np.zeros(6, dtype=bool))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -0.1},
        {"temperature": float("nan")},
        {"top_k": -1},
        {"top_k": 2.5},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"repetition_penalty": 0.5},
        {"repetition_window": 0},
    ],
)
def test_invalid_settings_raise(kwargs) -> None:
    with pytest.raises(ValueError):
        SamplingSettings(**kwargs)
