"""The inference engine: the ONNX decoder with its KV cache (:mod:`.engine`) and the offline
continuation of a MIDI file (:mod:`.offline`). The daemon, ``ostinato continue``, ``eval`` and
``bench`` all import it; it imports only :mod:`ostinato.model`'s token-side modules (no torch)."""

from ostinato.engine.engine import CARD_FILE, MODEL_FILE, Engine, GeneratedNote, ModelError

__all__ = ["CARD_FILE", "MODEL_FILE", "Engine", "GeneratedNote", "ModelError"]
