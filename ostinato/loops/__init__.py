"""Seeded, rule-based generator of bar-aligned multi-track loops (training data for the tonal
parts, which no openly licensed corpus provides): ``ostinato data synth OUT --loops N``."""
