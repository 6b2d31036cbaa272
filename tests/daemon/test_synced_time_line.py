"""perf_counter() → JACK time from the sender's SYNC reports (SyncedTimeLine), simulated."""

from __future__ import annotations

import numpy as np

from ostinato.daemon.sender import SyncedTimeLine

SYNC_S = 0.05  # the sender's SYNC period


def jack_line(perf: np.ndarray) -> np.ndarray:
    """A dummy driver on a loaded machine: 100 ppm slow, then 1.2 ms lost over two seconds
    (600 ppm), steady again, then an xrun that moves the line by 20 ms."""
    jack = 1000.0 + perf * (1 - 100e-6)
    jack -= np.clip(perf - 5.0, 0.0, 2.0) * 600e-6
    jack += np.where(perf >= 12.0, 0.020, 0.0)
    return jack


def test_the_time_line_follows_a_drifting_jack_clock() -> None:
    rng = np.random.default_rng(0)
    line = SyncedTimeLine()
    assert line.at(3.0) == 3.0  # no SYNC yet: perf_counter() itself (rtmidi backends)
    syncs = np.arange(0.0, 16.0, SYNC_S)
    jitter = rng.normal(0.0, 5e-6, len(syncs))  # JACK's frame estimate, the pump's stamps
    errors = []
    for perf, jack, noise in zip(syncs, jack_line(syncs), jitter, strict=True):
        line.sync(jack + noise, perf)
        for ahead in (0.01, 0.03, 0.049):  # read between this SYNC and the next
            t = perf + ahead
            errors.append((t, line.at(t) - jack_line(np.array([t]))[0]))
    t, error = np.array(errors).T
    # (a plain average of the SYNCs, weight 0.1, is up to 15 ms off after the xrun)
    assert np.abs(error[t > 1.0]).max() < 0.1e-3  # the xrun: taken at the first SYNC after it
    assert np.abs(error[t > 14.0]).max() < 20e-6  # steady: within the jitter
