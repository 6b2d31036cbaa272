"""The inference engine: an ONNX Runtime decoder with a KV cache that lives across calls.

No torch here. The engine keeps a preallocated window of ``W`` key/value slots bound once to
the session (IO binding), so a decode step copies nothing but one token's keys and values into
its slot. The context is *extended* with new tokens (incremental prefill) instead of being
re-run; when the window is full the oldest bars are dropped:

* ``slide="rope"`` (default): their slots are simply freed and reused. Keys were rotated by
  their absolute position when computed, so the rest of the cache stays valid; ``BOS`` stays as
  the attention sink.
* ``slide="reprefill"``: ``BOS`` and the newest bars are prefilled again from scratch (the
  model then sees exactly the positions it was trained on).

:meth:`Engine.generate` samples under the grammar and yields each note as soon as its
Duration token is sampled, so the downbeat is ready first.

Style and guidance (models whose tokenizer has ``Style_*`` tokens; others ignore both, with
one log line). Every context starts ``BOS Style_s`` (:meth:`Engine.set_style`; ``none`` when
no style is asked for), and the window's slides keep both as the attention sink. With
:meth:`Engine.set_guidance` ``G > 0`` and a style, a *second context* runs beside the first:
the same tokens with ``Style_none`` in place of the style, in a KV cache of its own (the
ONNX sessions are shared). Each token is then sampled from the classifier-free-guided logits
``cond + G·(cond − uncond)`` (= ``uncond + (1 + G)·(cond − uncond)``), so ``G = 0`` is exactly
the plain model and larger ``G`` pushes away from what the model would play without the
style. The cost: every token fed or sampled runs the decoder twice (about twice the time per
bar, and a second KV cache of the window's size), so it is off by default.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import EllipsisType

import numpy as np
import onnxruntime as ort

from ostinato.engine.copy import CopyPrior
from ostinato.exporter.runtime import ECHO_INPUT, PLACE_INPUT, PREV_INPUT
from ostinato.model.grammar import Grammar, GrammarConfig, State
from ostinato.model.sampling import Sampler, SamplingSettings
from ostinato.model.style import NONE
from ostinato.model.tokens import (
    NO_PREVIOUS,
    TOKENIZER_FILE,
    BarEcho,
    PlaceRule,
    TokenType,
    Vocab,
    load_tokenizer,
)

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"  # any number of new tokens: prefill
CARD_FILE = "card.json"
PREFILL_CHUNK = 256  # tokens per prefill call: bounds the mask and activation sizes
MAX_TOKENS_PER_BAR = 400  # safety net: past this, the bar is closed as soon as allowed
# Rotary angles are position × frequency in fp32: exact to ~0.004 rad up to 2^16. Past it the
# kept context is renumbered from position 0 (every ~10 minutes of playing at 180 BPM): its
# cached keys are rotated to their new positions (a few ms), nothing is computed again.
POSITION_LIMIT = 1 << 16
GRAMMAR_CACHE = 32  # grammars kept (a key lock makes one per key and set of notes used)


class ModelError(Exception):
    """The model folder is missing, corrupt or does not match its tokenizer."""


@dataclass(frozen=True)
class GeneratedNote:
    bar: int  # 0-based, counted from the first bar of this generate() call
    position: int  # grid position inside the bar
    start_beats: float  # from the start of the first generated bar
    duration_beats: float
    program: int  # -1 = drums
    pitch: int
    velocity: int


def _read_card(model_dir: Path) -> dict:
    if not model_dir.is_dir():
        raise ModelError(f"model folder {model_dir} does not exist")
    missing = [f for f in (MODEL_FILE, TOKENIZER_FILE, CARD_FILE) if not (model_dir / f).is_file()]
    if missing:
        raise ModelError(f"model folder {model_dir} lacks {', '.join(missing)}")
    try:
        card = json.loads((model_dir / CARD_FILE).read_text())
        _ = card["model"]["n_layer"], card["model"]["vocab_size"], card["window"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{model_dir / CARD_FILE} is not a valid model card: {exc}") from exc
    return card


def choose_providers(device: str) -> list[str]:
    """ONNX Runtime providers for ``device`` (auto: CUDA when onnxruntime-gpu has it)."""
    available = ort.get_available_providers()
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise ModelError(
            "CUDA was asked for but this onnxruntime has no CUDA provider "
            "(install onnxruntime-gpu instead of onnxruntime)"
        )
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


STYLE, GUIDE = "style", "guide"
FIRST_CHUNK_S = 0.1  # a chunk's time before one was measured (256 tokens of a 2,048 window)


class Shadow:
    """A context prepared beside the one in use, a chunk at a time, in the caller's spare time:
    ``tokens`` (the context as it was, with its style token replaced) being prefilled into a
    twin of ``main``. ``kind``: STYLE (it becomes the context, under ``style``) or GUIDE (it
    becomes the unconditional twin of guidance).

    A new style replaces the style token after ``BOS``; every cached key and value after it
    depends on it, so the whole context must be computed again: 0.6 s for the bundled model's
    2,048 tokens, far more than the time between two bars leaves at a fast tempo. Turning
    guidance on needs the same for the unconditional twin context. Done at once, either makes a
    bar late. A :class:`Shadow` computes that context in an engine of its own (its own KV cache,
    the same ONNX sessions) a prefill chunk at a time, while the context in use goes on being
    extended, truncated and slid; when it is complete it is brought up to date with the context
    in use (the bars that slid off the front dropped, the tokens both share kept, the newer ones
    fed) and takes over at a bar line — in the planner, before the bar's plan, at the cost of
    a copy and the tokens fed since its last catch-up.
    """

    def __init__(self, main: Engine, kind: str, style: str | None, tokens: np.ndarray,
                 chunk: int) -> None:  # fmt: skip
        self.kind, self.style, self.chunk = kind, style, chunk
        self.engine = main.twin()
        self.tokens = tokens
        self.done = 0  # of ``tokens``, prefilled
        self.chunk_s = FIRST_CHUNK_S  # what the last chunk took (before one ran: a guess)
        self.synced = False  # complete and brought up to date (since, main may have grown)
        self.engine.dropped_front = main.dropped_front

    @property
    def ready(self) -> bool:
        return self.done >= len(self.tokens)

    def step(self, budget_s: float) -> int:
        """Prefill chunks while the next one, timed like the last, fits in ``budget_s``.
        Returns how many."""
        end = time.perf_counter() + budget_s
        chunks = 0
        while not self.ready and time.perf_counter() + self.chunk_s <= end:
            chunks += 1
            started = time.perf_counter()
            chunk = self.tokens[self.done : self.done + self.chunk]
            self.engine._prefill(chunk)
            self.done += len(chunk)
            self.chunk_s = time.perf_counter() - started
        return chunks

    def catch_up(self, main: Engine) -> bool:
        """Make the prepared context hold what ``main``'s holds now (its own style token
        aside): what slid off main's front since is dropped, the tokens both still share are
        kept, the rest fed. False when main slid past all it holds (it must start again)."""
        twin = self.engine
        first = main.prefix_length
        slid = main.dropped_front - twin.dropped_front
        if slid < 0 or first + slid > twin.context_length:
            return False
        if slid:
            twin._drop_front(first, first + slid)
            twin.dropped_front = main.dropped_front
        mine, theirs = twin.context_tokens(), main.context_tokens()
        n = min(len(mine), len(theirs))
        differ = np.flatnonzero(mine[first:n] != theirs[first:n])
        common = first + (int(differ[0]) if len(differ) else n - first)
        if common < len(mine):
            twin.truncate(common)
        if len(theirs) > common:
            twin.feed(theirs[common:])
        return twin.dropped_front == main.dropped_front  # (the window held them all)


class Engine:
    def __init__(
        self,
        model_dir: str | Path,
        device: str = "auto",
        threads: int = 1,
        window: int | None = None,
        slide: str = "rope",
        verify_hash: bool = True,
    ) -> None:
        model_dir = Path(model_dir)
        self.model_dir = model_dir
        self.card = _read_card(model_dir)
        try:
            self.tokenizer = load_tokenizer(model_dir / TOKENIZER_FILE)
        except (FileNotFoundError, ValueError) as exc:
            raise ModelError(str(exc)) from exc
        self.vocab = Vocab.from_tokenizer(self.tokenizer)
        m = self.card["model"]
        if self.vocab.size != m["vocab_size"]:
            raise ModelError(
                f"tokenizer.json has {self.vocab.size} tokens but the model was trained with "
                f"{m['vocab_size']}: the files do not belong together"
            )
        onnx_path = model_dir / MODEL_FILE
        # The one-token graph every sampled token runs through (older folders: model.onnx).
        decode_name = self.card.get("decode_file")
        decode_path = model_dir / decode_name if decode_name else onnx_path
        if decode_name and not decode_path.is_file():
            raise ModelError(f"model folder {model_dir} lacks {decode_name}")
        if verify_hash:
            for path, key in ((onnx_path, "sha256"), (decode_path, "decode_sha256")):
                expected = self.card.get(key)
                if expected and hashlib.sha256(path.read_bytes()).hexdigest() != expected:
                    raise ModelError(f"{path} does not match the hash in card.json (corrupt?)")
        if slide not in ("rope", "reprefill"):
            raise ValueError(f"slide must be 'rope' or 'reprefill', got {slide!r}")
        self.slide = slide

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.providers = choose_providers(device)
        # the KV window's entries: one per layer, one more for a copy head (its keys, and as
        # each slot's first value the id of the token that followed it, which _follow writes:
        # see ostinato.exporter.graph)
        self._copy_head = bool(m.get("copy_head"))
        L = m["n_layer"] + int(self._copy_head)
        H, D = m["n_head"], m["d_model"] // m["n_head"]
        expected = ["tokens", "positions", "attn_mask"]
        expected += [f"past_k_{i}" for i in range(L)] + [f"past_v_{i}" for i in range(L)]
        self._previous = bool(m.get("previous_token"))  # the graphs take the token before each
        expected += [PREV_INPUT] if self._previous else []
        self._in_bar = int(m.get("bar_token", -1)) >= 0  # … and each one's place in its bar
        expected += [PLACE_INPUT] if self._in_bar else []
        self._echoes = self._in_bar and bool(m.get("bar_echo"))  # … and each one's echo
        expected += [ECHO_INPUT] if self._echoes else []
        self._places = PlaceRule.of(m) or PlaceRule(self.vocab.bar_id)
        first = self._places.position_id
        if self._places.musical and not (
            first < self.vocab.size
            and self.vocab.types[first] == TokenType.POSITION
            and self.vocab.values[first] == 0
        ):
            raise ModelError("the model counts places in the bar from another Position_0 "
                             "than the tokenizer's: the files do not belong together")  # fmt: skip
        if self._in_bar and m["bar_token"] != self.vocab.bar_id:
            raise ModelError("the model counts places in the bar from another token than the "
                             "tokenizer's Bar: the files do not belong together")  # fmt: skip
        sessions = {}
        for path in dict.fromkeys((onnx_path, decode_path)):
            try:
                sessions[path] = ort.InferenceSession(str(path), opts, providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
                raise ModelError(f"cannot load {path}: {exc}") from exc
            names = [i.name for i in sessions[path].get_inputs()]
            if names != expected:
                raise ModelError(f"{path} has inputs {names}, expected {expected}")
        self.session = sessions[onnx_path]
        self.decode_session = sessions[decode_path]
        self.device = "cuda" if self.providers[0].startswith("CUDA") else "cpu"

        # the run-time context: the card's choice (measured against the training window's
        # cost per note and what the music loses, see the model card), else the whole window
        W = int(window or self.card.get("context") or self.card["window"])
        if W < 32:
            raise ValueError("window must be at least 32 tokens")
        self.window = W
        self._shape = (L, H, D)
        # the rotary frequencies as the graph computes them (fp32): to move cached keys
        half = np.arange(0, D, 2, dtype=np.float32) / np.float32(D)
        base = np.float32(m.get("rope_base", 10000.0))
        self._inv_freq = (np.float32(1.0) / np.power(base, half)).astype(np.float32)
        # the rotary pairs that turn with the place in the bar (a renumbering leaves them)
        self._bar_pairs = (np.arange(D // 2) % 2 == 1) & self._in_bar
        self._allocate()
        self._grammars: dict[GrammarConfig, Grammar] = {}
        self._penalized = (self.vocab.types == TokenType.PITCH) | (
            self.vocab.types == TokenType.PITCH_DRUM
        )
        self.style: str | None = None  # the style asked for (None: none)
        self.guidance = 0.0
        self._guide: Engine | None = None  # the unconditional twin context (guidance > 0)
        self._shadow: Shadow | None = None  # a style or a guide twin prepared in spare time
        self._said: set[str] = set()  # one-line notices already logged
        self.renumbered = 0  # times the positions started from 0 again (POSITION_LIMIT)
        self.renumbered_ahead = 0  # of those, asked for ahead (between bars)
        self.reset()

    def _allocate(self) -> None:
        """The KV window, the decode step's inputs/outputs and the context bookkeeping, each
        allocated once (a guidance twin gets its own)."""
        (L, H, D), W = self._shape, self.window
        self.k_buf = np.zeros((L, 1, H, W, D), dtype=np.float32)
        self.v_buf = np.zeros((L, 1, H, W, D), dtype=np.float32)
        self._tok1 = np.zeros((1, 1), dtype=np.int64)
        self._pos1 = np.zeros((1, 1), dtype=np.int64)
        self._prev1 = np.full((1, 1), NO_PREVIOUS, dtype=np.int64)
        self._place1 = np.zeros((1, 1), dtype=np.int64)
        self._echo1 = np.full((1, 1), NO_PREVIOUS, dtype=np.int64)
        self._mask1 = np.full((1, 1, 1, W + 1), -np.inf, dtype=np.float32)
        self._mask1[..., W] = 0.0  # a new token always sees itself
        self._slot_valid = self._mask1[0, 0, 0, :W]  # view: 0 = holds a token, -inf = free
        self._logits1 = np.zeros((1, self.vocab.size), dtype=np.float32)
        self._newk1 = np.zeros((L, 1, H, 1, D), dtype=np.float32)
        self._newv1 = np.zeros((L, 1, H, 1, D), dtype=np.float32)
        self._bind_decode()
        # Context bookkeeping: tokens in order, the slot each occupies.
        self._ctx_tokens = np.zeros(W, dtype=np.int64)
        self._ctx_places = np.zeros(W, dtype=np.int64)  # each token's place in its bar
        # the token before the next one and its place in its bar (kept apart from the context:
        # a slide may drop every token but BOS and the style, not what the next one follows)
        self._last_token, self._last_place = NO_PREVIOUS, 0
        self._echo = BarEcho(self.vocab.bar_id)  # … and the bars the next one's echo is from
        self._ctx_slots = np.zeros(W, dtype=np.int64)
        self._slot_pos = np.zeros(W, dtype=np.int64)  # the position each slot's key is at
        self._ctx_len = 0
        self._free = np.ones(W, dtype=bool)
        self._history = np.zeros(4096, dtype=np.int64)  # recent tokens for the penalty
        self._history_len = 0
        self.next_position = 0
        self.dropped_front = 0
        self.last_logits = np.zeros(self.vocab.size, dtype=np.float32)

    # -- ONNX Runtime plumbing -------------------------------------------------------------
    def _bind_decode(self) -> None:
        """Bind the decode step's buffers once; each step only rewrites their contents."""
        io = self.decode_session.io_binding()
        inputs = [("tokens", self._tok1), ("positions", self._pos1), ("attn_mask", self._mask1)]
        for i in range(self.k_buf.shape[0]):  # per-layer views of the one buffer: no copies
            inputs += [(f"past_k_{i}", self.k_buf[i]), (f"past_v_{i}", self.v_buf[i])]
        if self._previous:
            inputs.append((PREV_INPUT, self._prev1))
        if self._in_bar:
            inputs.append((PLACE_INPUT, self._place1))
        if self._echoes:
            inputs.append((ECHO_INPUT, self._echo1))
        self._bound = inputs  # keep the arrays the OrtValues point into alive
        for name, arr in inputs:
            io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr))
        for name, arr in (
            ("logits", self._logits1),
            ("new_k", self._newk1),
            ("new_v", self._newv1),
        ):
            io.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(arr))
        self._io = io

    # -- context ---------------------------------------------------------------------------
    @property
    def context_length(self) -> int:
        return self._ctx_len

    # ``dropped_front``: tokens dropped from the front of the context (after BOS) by the
    # window sliding since the last reset. A caller that remembers a length of the context
    # finds it again, after any slide, as that length − (dropped_front now − dropped_front then).

    def context_tokens(self) -> np.ndarray:
        return self._ctx_tokens[: self._ctx_len].copy()

    @property
    def prefix(self) -> list[int]:
        """What every context starts with: ``BOS``, then the style token if the model has
        style tokens (``Style_none`` when no style is asked for)."""
        style = self.vocab.style_token(self.style)
        return [self.vocab.bos_id] if style is None else [self.vocab.bos_id, style]

    @property
    def prefix_length(self) -> int:
        """Tokens at the front of every context that slides never drop (BOS, the style)."""
        return 2 if self.vocab.has_styles else 1

    def _notice(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            log.info(text)

    def reset(self, style: str | EllipsisType | None = ...) -> None:
        """Empty the cache and start a new context with ``BOS`` (and the style token, see
        :attr:`prefix`). ``style``: a new style for it (default: the one set before)."""
        if not isinstance(style, EllipsisType):
            self._set_style_name(style)
        self._shadow = None
        guide, self._guide = self._guide, None
        self._clear()
        self.feed(self.prefix)
        self._guide = guide
        self._sync_guide()

    def _clear(self) -> None:
        self._slot_valid[:] = -np.inf
        self._free[:] = True
        self._ctx_len = 0
        self._history_len = 0
        self.next_position = 0
        self.dropped_front = 0
        self._last_token, self._last_place = NO_PREVIOUS, 0
        self._echo = BarEcho(self.vocab.bar_id)

    # -- style and guidance ------------------------------------------------------------------
    def _set_style_name(self, style: str | None) -> None:
        if style in (NONE, "auto"):
            style = None
        if style is not None and not self.vocab.has_styles:
            self._notice(f"this model has no style tokens: style {style} is ignored")
            style = None
        self.vocab.style_token(style)  # ValueError for a style it has no token for
        self.style = style

    def set_style(self, style: str | None) -> None:
        """Ask for ``style`` (None, ``none`` or ``auto``: none). The context keeps its tokens:
        the style token after ``BOS`` is replaced and the context prefilled again (its
        length, and what :attr:`dropped_front` counts, stay the same)."""
        before = self.style
        self._set_style_name(style)
        self._shadow = None
        if self.style == before:
            return
        if self._ctx_len >= 2 and self.vocab.has_styles:
            tokens = self.context_tokens()
            tokens[1] = self.vocab.style_token(self.style)
            self._refill(tokens)
        self._sync_guide()

    def set_guidance(self, guidance: float) -> None:
        """Classifier-free guidance strength (0 = off). Ignored, with one log line, by a
        model without style tokens."""
        if guidance < 0:
            raise ValueError(f"guidance must be ≥ 0, got {guidance}")
        if guidance > 0 and not self.vocab.has_styles:
            self._notice("this model has no style tokens: guidance is ignored")
            guidance = 0.0
        running = self._guide is not None
        self.guidance = float(guidance)
        if not (running and self._guidance_on):  # a new strength alone changes no context
            self._sync_guide()

    @property
    def _guidance_on(self) -> bool:
        return self.guidance > 0 and self.style is not None

    def _sync_guide(self) -> None:
        """Start, stop or re-fill the unconditional twin so it holds this context with
        ``Style_none`` in place of the style."""
        if self._shadow is not None and self._shadow.kind == GUIDE:
            self._shadow = None  # done here and now instead
        if not self._guidance_on:
            self._guide = None
            return
        if self._guide is None:
            self._guide = self.twin()
        tokens = self.context_tokens()
        tokens[1] = self.vocab.style_token(None)
        self._guide._refill(tokens)
        self._guide.dropped_front = self.dropped_front

    def twin(self) -> Engine:
        """An empty context of its own (a KV cache and bookkeeping) on this engine's model:
        the ONNX sessions, the vocabulary and the card are shared. No style, no guidance."""
        twin = copy.copy(self)
        twin._guide = twin._shadow = None
        twin.style = None
        twin.guidance = 0.0
        twin._grammars = {}
        twin._allocate()
        twin._clear()
        return twin

    # -- a style or guidance prepared in spare time (see :class:`Shadow`) --------------------
    @property
    def style_asked(self) -> str | None:
        """The style being prepared, else the style in use."""
        shadow = self._shadow
        return shadow.style if shadow is not None and shadow.kind == STYLE else self.style

    @property
    def preparing(self) -> bool:
        """A context is being prepared (:meth:`prepare_step` has work to do)."""
        return self._shadow is not None and not self._shadow.synced

    def prepare_style(self, style: str | None) -> None:
        """Ask for ``style`` as :meth:`set_style` does, without computing the context again
        now: it is prepared by :meth:`prepare_step` and takes over at :meth:`adopt_prepared`.
        Where no context needs computing (no style tokens, a bare context) it applies now."""
        if style in (NONE, "auto"):
            style = None
        if style == self.style_asked:
            return
        if self._ctx_len < 2 or not self.vocab.has_styles:
            self.set_style(style)
            return
        self.vocab.style_token(style)  # ValueError for a style it has no token for
        if style == self.style:  # back to the style in use: nothing to prepare
            self._shadow = None
            return
        tokens = self.context_tokens()
        tokens[1] = self.vocab.style_token(style)
        self._shadow = Shadow(self, STYLE, style, tokens, PREFILL_CHUNK)
        self._shadow.engine.style = style

    def prepare_guidance(self, guidance: float) -> None:
        """Set the guidance strength as :meth:`set_guidance` does; where it needs the
        unconditional twin started, that twin is prepared in spare time (until it takes
        over at :meth:`adopt_prepared`, tokens are sampled without guidance)."""
        if guidance < 0:
            raise ValueError(f"guidance must be ≥ 0, got {guidance}")
        if guidance > 0 and not self.vocab.has_styles:
            self._notice("this model has no style tokens: guidance is ignored")
            guidance = 0.0
        self.guidance = float(guidance)
        self._prepare_guide()

    def _prepare_guide(self) -> None:
        shadow = self._shadow
        if not self._guidance_on:
            self._guide = None
            if shadow is not None and shadow.kind == GUIDE:
                self._shadow = None
            return
        if self._guide is not None or shadow is not None:  # (a style first: see adopt)
            return
        tokens = self.context_tokens()
        tokens[1] = self.vocab.style_token(None)
        self._shadow = Shadow(self, GUIDE, None, tokens, PREFILL_CHUNK)

    def prepare_step(self, budget_s: float) -> bool:
        """Spend up to ``budget_s`` preparing: prefill chunks, then bring the prepared context
        up to date with this one (so that taking over later costs little). Returns whether
        anything was done (False: not even a chunk fits in ``budget_s``)."""
        shadow = self._shadow
        if shadow is None or shadow.synced:
            return False
        if not shadow.step(budget_s) and not shadow.ready:
            return False
        if shadow.ready and not shadow.catch_up(self):
            self._restart_shadow()
        elif shadow.ready:
            shadow.synced = True
        return True

    def adopt_prepared(self) -> bool:
        """Where a prepared context is complete, it takes over (call it at a bar line):
        brought up to date with this one first. Returns whether one took over."""
        shadow = self._shadow
        if shadow is None or not shadow.ready:
            return False
        if not shadow.catch_up(self):
            self._restart_shadow()
            return False
        self._shadow = None
        twin = shadow.engine
        if shadow.kind == GUIDE:
            self._guide = twin
            return True
        for mine, theirs in (
            (self.k_buf, twin.k_buf),
            (self.v_buf, twin.v_buf),
            (self._ctx_tokens, twin._ctx_tokens),
            (self._ctx_places, twin._ctx_places),
            (self._ctx_slots, twin._ctx_slots),
            (self._slot_pos, twin._slot_pos),
            (self._free, twin._free),
            (self._slot_valid, twin._slot_valid),
        ):
            np.copyto(mine, theirs)  # in place: the decode step's bindings stay
        self._ctx_len, self.next_position = twin._ctx_len, twin.next_position
        self._last_token, self._last_place = twin._last_token, twin._last_place
        self._echo = twin._echo.copy()
        self.last_logits = twin.last_logits.copy()
        self.style = shadow.style
        self._prepare_guide()  # the twin of guidance, if now needed, is prepared next
        return True

    def _restart_shadow(self) -> None:
        """The context slid past what was prepared: prepare it again from the context now."""
        shadow, self._shadow = self._shadow, None
        if shadow is not None and shadow.kind == STYLE:
            self.prepare_style(shadow.style)
        else:
            self._prepare_guide()

    def _refill(self, tokens: np.ndarray) -> None:
        """Prefill ``tokens`` as the whole context from position 0 (dropped_front kept)."""
        dropped = self.dropped_front
        self._clear()
        self.dropped_front = dropped
        for start in range(0, len(tokens), PREFILL_CHUNK):
            self._prefill(tokens[start : start + PREFILL_CHUNK])

    def guided_logits(self) -> np.ndarray:
        """The next token's logits: the model's, or with guidance on
        ``cond + G·(cond − uncond)`` from this context and its unconditional twin."""
        if self._guide is None:
            return self.last_logits
        cond, uncond = self.last_logits, self._guide.last_logits
        return cond + self.guidance * (cond - uncond)

    def feed(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Extend the context; returns the next-token logits (V,), also kept in last_logits
        (the twin context of guidance, if on, is extended alike)."""
        if self._guide is not None:
            self._guide.feed(tokens)
        if len(tokens) == 1 and type(tokens[0]) is int:  # the per-token path: no arrays
            token = tokens[0]
            if not 0 <= token < self.vocab.size:
                raise ValueError("token id outside the vocabulary")
            self._make_room(1)
            self._step(token)
            return self.last_logits
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or len(tokens) == 0:
            raise ValueError("feed() takes a non-empty 1-D sequence of token ids")
        if tokens.min() < 0 or tokens.max() >= self.vocab.size:
            raise ValueError("token id outside the vocabulary")
        room = self.window - self._front()
        if len(tokens) > room:  # only the newest tokens can be kept, after those before them
            gone = tokens[:-room]
            places = self._places.places(gone, self._last_place)
            if self._echoes:
                self._echo.steps(gone, places)
            self._last_token, self._last_place = int(gone[-1]), int(places[-1])
            tokens = tokens[-room:]
        self._make_room(len(tokens))
        if len(tokens) == 1:
            self._step(int(tokens[0]))
        else:
            for start in range(0, len(tokens), PREFILL_CHUNK):
                self._prefill(tokens[start : start + PREFILL_CHUNK])
        return self.last_logits

    def truncate(self, length: int) -> None:
        """Forget the newest tokens so the context holds ``length`` tokens (≥ 1: BOS stays;
        keep :attr:`prefix_length` for the style to stay too).
        Their slots are freed; the next position continues from the kept tokens."""
        if not 1 <= length <= self._ctx_len:
            raise ValueError(f"cannot truncate a context of {self._ctx_len} to {length}")
        if self._guide is not None:
            self._guide.truncate(length)
        dropped = self._ctx_slots[length : self._ctx_len]
        self._free[dropped] = True
        self._slot_valid[dropped] = -np.inf
        self.next_position -= self._ctx_len - length
        self._last_token = int(self._ctx_tokens[length - 1])
        self._last_place = int(self._ctx_places[length - 1])
        if self._echoes and length < self._ctx_len:
            # inside the bar: its steps taken back (the bar before is kept, even where a slide
            # dropped it from the context); across a bar line: rebuilt from the context
            gone = self._ctx_tokens[length : self._ctx_len]
            inside = not (gone == self.vocab.bar_id).any()
            if not (inside and self._echo.rewind(len(gone), self._last_place)):
                self._echo = BarEcho.after(
                    self.vocab.bar_id, self._ctx_tokens[:length], self._ctx_places[:length]
                )
        self._history_len = max(0, self._history_len - (self._ctx_len - length))
        self._ctx_len = length

    def _remember(self, tokens: np.ndarray, slots: np.ndarray, places: np.ndarray) -> None:
        n = len(tokens)
        self._ctx_tokens[self._ctx_len : self._ctx_len + n] = tokens
        self._ctx_places[self._ctx_len : self._ctx_len + n] = places
        self._ctx_slots[self._ctx_len : self._ctx_len + n] = slots
        self._ctx_len += n
        self._free[slots] = False
        self._slot_valid[slots] = 0.0
        self.next_position += n
        if self._history_len + n > len(self._history):
            keep = 1024
            self._history[:keep] = self._history[self._history_len - keep : self._history_len]
            self._history_len = keep
        self._history[self._history_len : self._history_len + n] = tokens
        self._history_len += n

    def _follow(self, token: int) -> None:
        """A copy head reads each slot as the token that followed it: write ``token``, about to
        be fed, as the follower of the context's last one (whatever followed it before a
        truncate is overwritten here)."""
        if self._copy_head and self._ctx_len:
            self.v_buf[-1, 0, :, self._ctx_slots[self._ctx_len - 1], 0] = token

    def _step(self, token: int) -> None:
        self._follow(token)
        slot = int(np.argmax(self._free))  # first free slot
        self._tok1[0, 0] = token
        self._pos1[0, 0] = self.next_position
        self._prev1[0, 0] = self._last_token
        place = self._places.after(self._last_place, token)
        self._place1[0, 0] = place
        if self._echoes:
            self._echo1[0, 0] = self._echo.step(token, place)
        self._last_token, self._last_place = token, place
        self.decode_session.run_with_iobinding(self._io)
        self.k_buf[:, :, :, slot] = self._newk1[:, :, :, 0]
        self.v_buf[:, :, :, slot] = self._newv1[:, :, :, 0]
        self._slot_pos[slot] = self.next_position
        self.last_logits = self._logits1[0]
        # The per-token bookkeeping of _remember, without building arrays.
        n = self._ctx_len
        self._ctx_tokens[n] = token
        self._ctx_places[n] = place
        self._ctx_slots[n] = slot
        self._ctx_len = n + 1
        self._free[slot] = False
        self._slot_valid[slot] = 0.0
        self.next_position += 1
        if self._history_len == len(self._history):
            self._history[:1024] = self._history[-1024:]
            self._history_len = 1024
        self._history[self._history_len] = token
        self._history_len += 1

    def _prefill(self, tokens: np.ndarray) -> None:
        self._follow(int(tokens[0]))
        T, W = len(tokens), self.window
        slots = np.flatnonzero(self._free)[:T]
        mask = np.empty((1, 1, T, W + T), dtype=np.float32)
        mask[..., :W] = self._slot_valid
        mask[..., W:] = np.where(np.tri(T, dtype=bool), 0.0, -np.inf)
        positions = np.arange(self.next_position, self.next_position + T, dtype=np.int64)[None]
        feeds = {"tokens": tokens[None], "positions": positions, "attn_mask": mask}
        for i in range(self.k_buf.shape[0]):
            feeds[f"past_k_{i}"] = self.k_buf[i]
            feeds[f"past_v_{i}"] = self.v_buf[i]
        if self._previous:
            before = [self._last_token]
            feeds[PREV_INPUT] = np.concatenate((before, tokens[:-1])).astype(np.int64)[None]
        places = self._places.places(tokens, self._last_place)
        if self._in_bar:
            feeds[PLACE_INPUT] = places.astype(np.int64)[None]
        if self._echoes:
            feeds[ECHO_INPUT] = self._echo.steps(tokens, places)[None]
        logits, new_k, new_v = self.session.run(None, feeds)
        self.k_buf[:, :, :, slots] = new_k
        self.v_buf[:, :, :, slots] = new_v
        self._slot_pos[slots] = positions[0]
        self.last_logits = logits[0].copy()
        self._remember(tokens, slots, places)
        self._last_token, self._last_place = int(tokens[-1]), int(places[-1])

    def _front(self) -> int:
        """Tokens at the front that slides keep: BOS (the attention sink) and a style after
        it; 0 for a context that does not start with BOS."""
        ctx, n = self._ctx_tokens, self._ctx_len
        if n == 0 or ctx[0] != self.vocab.bos_id:
            return 0
        return 2 if n > 1 and self.vocab.types[ctx[1]] == TokenType.STYLE else 1

    def _make_room(self, needed: int) -> None:
        """Free at least ``needed`` slots by dropping the oldest bars of the context (and
        start positions from 0 again when they near ``POSITION_LIMIT``)."""
        free = int(self._free.sum())
        rebase = self.next_position + needed > POSITION_LIMIT
        if free >= needed and not rebase:
            return
        ctx = self._ctx_tokens[: self._ctx_len]
        first = self._front()
        if free >= needed:  # only the rebase: keep every token
            cut = first
        else:
            # Drop whole bars until a quarter of the window is free (amortizes the work).
            target = max(needed, self.window // 4) - free
            bars = np.flatnonzero(ctx == self.vocab.bar_id)
            cut_candidates = bars[bars >= first + target]
            cut = int(cut_candidates[0]) if len(cut_candidates) else self._ctx_len
        self.dropped_front += cut - first
        if self.slide == "reprefill":
            kept = np.concatenate((ctx[:first], ctx[cut:])).copy()
            last = self._last_token, self._last_place, self._echo
            self._slot_valid[:] = -np.inf
            self._free[:] = True
            self._ctx_len = 0
            self.next_position = 0
            self._last_token, self._last_place = NO_PREVIOUS, 0  # the context anew from BOS
            self._echo = BarEcho(self.vocab.bar_id)
            for start in range(0, len(kept), PREFILL_CHUNK):
                self._prefill(kept[start : start + PREFILL_CHUNK])
            if cut == len(ctx):  # nothing after the front stayed: the next token follows
                self._last_token, self._last_place, self._echo = last  # the last one fed
            return
        self._drop_front(first, cut)
        if rebase:
            self._renumber()

    def _drop_front(self, first: int, cut: int) -> None:
        """Forget the context's tokens ``first:cut`` (a slide: what stays keeps its keys)."""
        dropped = self._ctx_slots[first:cut]
        self._free[dropped] = True
        self._slot_valid[dropped] = -np.inf
        n_drop = cut - first
        self._ctx_tokens[first : self._ctx_len - n_drop] = self._ctx_tokens[cut : self._ctx_len]
        self._ctx_places[first : self._ctx_len - n_drop] = self._ctx_places[cut : self._ctx_len]
        self._ctx_slots[first : self._ctx_len - n_drop] = self._ctx_slots[cut : self._ctx_len]
        self._ctx_len -= n_drop

    def renumber_ahead(self, headroom: int) -> bool:
        """Renumber now (see :meth:`_renumber`) if the positions would pass POSITION_LIMIT
        within ``headroom`` more tokens: a caller between bars keeps it out of a bar.
        Returns whether it did."""
        if self.next_position + headroom <= POSITION_LIMIT:
            return False
        self._renumber()
        self.renumbered_ahead += 1
        if self._guide is not None:
            self._guide.renumber_ahead(headroom)
        return True

    def _renumber(self) -> None:
        """Give the context positions 0, 1, … again, in order, without computing anything
        again: rotary embeddings make attention depend on positions only through their
        differences, so each cached key is rotated from the angle it was computed at to the
        angle of its new position (both as the graph computes them, in fp32) — the keys are
        then those the graph would have produced there. Values carry no position."""
        n = self._ctx_len
        slots = self._ctx_slots[:n]
        new = np.arange(n, dtype=np.int64)

        def angles(positions: np.ndarray) -> np.ndarray:
            return (positions.astype(np.float32)[:, None] * self._inv_freq).astype(np.float64)

        turn = angles(new) - angles(self._slot_pos[slots])  # (n, D/2)
        turn[:, self._bar_pairs] = 0.0  # a place in the bar stays where it was
        cos, sin = np.cos(turn).astype(np.float32), np.sin(turn).astype(np.float32)
        half = self._shape[2] // 2
        keys = self.k_buf[:, :, :, slots]  # (L, 1, H, n, D), a copy
        x1, x2 = keys[..., :half], keys[..., half:]
        self.k_buf[:, :, :, slots, :half] = x1 * cos - x2 * sin
        self.k_buf[:, :, :, slots, half:] = x1 * sin + x2 * cos
        self._slot_pos[slots] = new
        self.next_position = n
        self.renumbered += 1

    # -- generation ------------------------------------------------------------------------
    def grammar(self, config: GrammarConfig) -> Grammar:
        grammar = self._grammars.pop(config, None)
        if grammar is None:
            grammar = Grammar(self.vocab, config)  # ~0.4 ms: worth keeping a few
            if len(self._grammars) >= GRAMMAR_CACHE:
                del self._grammars[next(iter(self._grammars))]  # least recently used
        self._grammars[config] = grammar
        return grammar

    def sampler(self, settings: SamplingSettings, seed: int | None = None) -> Sampler:
        return Sampler(settings, self.vocab.size, seed=seed, penalized=self._penalized)

    def generate(
        self,
        bars: int,
        sampler: Sampler,
        grammar_config: GrammarConfig | None = None,
        tokens_out: list[int] | None = None,
        prior: CopyPrior | None = None,
    ) -> Generator[GeneratedNote, None, None]:
        """Generate ``bars`` bars after the context, yielding each note when it is complete.

        The context is closed with a ``Bar`` token first if it does not end with one. The
        ``Bar`` that ends the last generated bar is fed too, so the next call (or the next
        bars of the musician) extend the context where this one stopped. Every sampled token
        (that closing ``Bar`` included) is appended to ``tokens_out`` when given. ``prior``:
        the reference bars each generated bar varies (see :mod:`ostinato.engine.copy`).
        """
        if bars < 1:
            raise ValueError("bars must be ≥ 1")
        vocab = self.vocab
        grammar = self.grammar(grammar_config or GrammarConfig())
        last = self._ctx_tokens[self._ctx_len - 1]
        # An empty last bar (a Bar, or with TimeSig tokens Bar and the meter's TimeSig) is the
        # bar generated; otherwise the context is closed with a Bar first.
        ends_in_bar = last == vocab.bar_id or (
            last == grammar.time_sig_id
            and self._ctx_len >= 2
            and self._ctx_tokens[self._ctx_len - 2] == vocab.bar_id
        )
        if not ends_in_bar:
            self.feed([vocab.bar_id])
        grammar.reset(at_bar_start=True)
        if last == grammar.time_sig_id and ends_in_bar:
            grammar.advance(int(last))
        if prior is not None:
            prior.begin_bar(0)
        yield from self._decode(bars, sampler, grammar, tokens_out, prior)

    def complete_bar(
        self,
        sampler: Sampler,
        grammar_config: GrammarConfig,
        from_position: int,
        tokens_out: list[int] | None = None,
        prior: CopyPrior | None = None,
        until_position: int | None = None,
    ) -> Generator[GeneratedNote, None, None]:
        """Generate the rest of the bar the context ends in, yielding each note when complete.

        The context holds the bar as far as it is known: its ``Bar`` token (``TimeSig``), its
        header and the notes known so far, in token order (the musician's notes played, and
        Ostinato's that are final) — fed like any other tokens, so the cache is extended, never
        recomputed. Notes start at position ``from_position`` of the bar or later, only on
        ``grammar_config``'s programs; the bar's closing ``Bar`` is sampled and fed as in
        :meth:`generate`. ``prior``: the bar's references, followed from their first onset at
        or after ``from_position``. ``until_position``: stop before the first note at that
        position or later (the context then ends inside the bar: truncate before extending it
        elsewhere); None: to the bar's end.
        """
        vocab = self.vocab
        ctx = self._ctx_tokens[: self._ctx_len]
        bars = np.flatnonzero(ctx == vocab.bar_id)
        if not len(bars):
            raise ValueError("the context holds no bar to complete")
        grammar = self.grammar(grammar_config)
        grammar.replay(ctx[int(bars[-1]) :])
        if prior is not None:
            prior.begin_bar(0)
            prior.seek(from_position)
        yield from self._decode(1, sampler, grammar, tokens_out, prior, from_position,
                                until_position)  # fmt: skip

    def _positions_from(self, grammar: Grammar, position: int) -> np.ndarray:
        """The tokens that may come next while a bar is completed from ``position``: its
        Positions from there on, and ``Bar`` (the rest of the bar silent)."""
        vocab = self.vocab
        row = (vocab.types == TokenType.POSITION) & (vocab.values >= position)
        row &= vocab.values < grammar.positions_per_bar
        row[vocab.bar_id] = True
        return row

    def _onward(self, mask: np.ndarray, onward: np.ndarray) -> np.ndarray:
        """The grammar's ``mask`` kept to ``onward``; where the two share nothing (a part's
        floor wanted a note earlier than the bar may still take one), the first position
        ``onward`` allows (``Bar`` when none is left)."""
        kept = mask & onward
        if kept.any():
            return kept
        vocab = self.vocab
        positions = np.flatnonzero(onward & (vocab.types == TokenType.POSITION))
        first = np.zeros_like(onward)
        if len(positions):
            first[positions[np.argmin(vocab.values[positions])]] = True
        else:
            first[vocab.bar_id] = True
        return first

    def _decode(
        self,
        bars: int,
        sampler: Sampler,
        grammar: Grammar,
        tokens_out: list[int] | None,
        prior: CopyPrior | None,
        from_position: int = 0,
        until_position: int | None = None,
    ) -> Generator[GeneratedNote, None, None]:
        """Sample ``bars`` bars' worth of tokens from where ``grammar`` stands; no note before
        ``from_position`` of the first bar; with ``until_position``, stop (the token not fed)
        at the first bar's first Position there or later, or its closing ``Bar``."""
        vocab = self.vocab
        position_beats, beats_per_bar = grammar.quarters_per_position, grammar.config.beats_per_bar
        beat_quarters = vocab.beat_quarters(grammar.meter)
        types, values = vocab.types, vocab.values
        bar_only = np.zeros(vocab.size, dtype=bool)
        bar_only[vocab.bar_id] = True
        tokens_in_bar = 0
        program = pitch = velocity = 0
        onward = self._positions_from(grammar, from_position) if from_position > 0 else None
        while grammar.bars_completed < bars:
            mask = grammar.mask()
            if onward is not None:
                if grammar.bars_completed or grammar.position >= from_position:
                    onward = None  # past the floor: the grammar alone from here
                else:
                    mask = self._onward(mask, onward)
            cap = MAX_TOKENS_PER_BAR if prior is None else prior.token_cap(MAX_TOKENS_PER_BAR)
            if tokens_in_bar >= cap and mask[vocab.bar_id]:
                mask = bar_only
            token = -1
            header = grammar.state == State.HEADER and grammar.in_header  # what plays: no prior
            if prior is not None and not header:
                token, mask = prior.choose(mask, sampler.rng, self.guided_logits)
            if token < 0:
                recent = self._history[max(0, self._history_len - 256) : self._history_len]
                token = sampler.sample(self.guided_logits(), mask, recent)
            kind = types[token]
            if until_position is not None and (
                kind == TokenType.BAR or (kind == TokenType.POSITION
                                          and values[token] >= until_position)
            ):  # fmt: skip
                break
            grammar.advance(token)
            if prior is not None:
                if token == vocab.bar_id:
                    prior.begin_bar(grammar.bars_completed)
                elif not (header and types[token] == TokenType.PROGRAM):
                    prior.observe(token)
            if tokens_out is not None:
                tokens_out.append(token)
            tokens_in_bar = 0 if kind == TokenType.BAR else tokens_in_bar + 1
            if kind == TokenType.PROGRAM:
                program = int(values[token])
            elif kind == TokenType.PITCH or kind == TokenType.PITCH_DRUM:
                pitch = int(values[token])
            elif kind == TokenType.VELOCITY:
                velocity = int(values[token])
            self._make_room(1)
            self._step(token)  # the closing Bar too: the next call extends from there
            if self._guide is not None:
                self._guide._make_room(1)
                self._guide._step(token)
            if grammar.bars_completed == bars:
                break
            if kind == TokenType.DURATION:
                bar = grammar.bars_completed
                yield GeneratedNote(
                    bar=bar,
                    position=grammar.position,
                    start_beats=bar * beats_per_bar + grammar.position * position_beats,
                    duration_beats=float(vocab.duration_beats[token]) * beat_quarters,
                    program=program,
                    pitch=pitch,
                    velocity=velocity,
                )
