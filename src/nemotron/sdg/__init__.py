"""Synthetic data generation (the Nemotron-4 340B recipe).

Pure building blocks live here as small modules with no heavy imports: `constraints` (verifiable
instruction-following constraints and their checkers), `parsing` (model output to lists), `dedup`
(exact and MinHash near-duplicate removal), `filters` (reward and length thresholds) and `answers`
(math final-answer extraction and comparison).
"""
