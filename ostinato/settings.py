"""The one settings object for generation: CLI, config file, OSC and the panel all go
through :meth:`GenerationSettings.replace`, which validates everything in one place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ostinato.model.sampling import SamplingSettings

MODES = ("continue", "jam", "loop")


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    programs: tuple[int, ...] | None = None  # None: the instruments the musician plays
    bars: int = 4  # bars of answer in continue mode
    phrase_bars: int = 2  # a phrase this long is answered without waiting for silence
    mode: str = "continue"
    seed: int | None = None
    key_lock: bool = True  # pitched notes stay in the context's key (+ the notes it used)

    def __post_init__(self) -> None:
        self.sampling  # validates temperature, top-k, top-p, penalty  # noqa: B018
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 1 <= self.bars <= 64:
            raise ValueError(f"bars must be 1..64, got {self.bars}")
        if not 1 <= self.phrase_bars <= 64:
            raise ValueError(f"phrase_bars must be 1..64, got {self.phrase_bars}")
        if not isinstance(self.key_lock, bool):
            raise ValueError(f"key_lock must be true or false, got {self.key_lock!r}")
        if self.programs is not None and (
            not self.programs or not all(-1 <= p <= 127 for p in self.programs)
        ):
            raise ValueError("programs must be -1 (drums) or 0..127, at least one")

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
        )

    def replace(self, **changes) -> GenerationSettings:
        """A validated copy with ``changes``; raises ValueError and changes nothing if bad."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        if "programs" in changes and changes["programs"] is not None:
            changes["programs"] = tuple(sorted({int(p) for p in changes["programs"]}))
        return dataclasses.replace(self, **changes)
