"""Drawing random constraints that can all be satisfied together.

The conflict table is IFEval's (`INSTRUCTION_CONFLICTS`, made symmetric, every type conflicting
with itself), plus the pairs marked "ours" below that IFEval leaves open but no response can meet.
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from nemotron.sdg.constraints.base import CONSTRAINT_TYPES, Constraint


def _build_conflicts() -> dict[str, frozenset[str]]:
    every = set(CONSTRAINT_TYPES)
    table: dict[str, set[str]] = {
        "language:response_language": {
            "detectable_format:multiple_sections", "keywords:existence", "keywords:frequency",
            "keywords:forbidden_words", "startend:end_checker", "change_case:english_capital",
            "change_case:english_lowercase",
            # ours: capital words and letter counts only make sense in Latin-script English
            "change_case:capital_word_frequency", "keywords:letter_frequency",
            # ours: sentences are counted by Punkt's English model, blind to 。 and । full stops
            "length_constraints:number_sentences",
        },
        "length_constraints:number_paragraphs": {
            "length_constraints:nth_paragraph_first_word", "length_constraints:number_sentences",
        },
        "detectable_format:constrained_response": every,
        "detectable_format:multiple_sections": {"detectable_format:number_highlighted_sections"},
        "detectable_format:json_format": every - {"keywords:forbidden_words", "keywords:existence"},
        "combination:two_responses": every - {
            "keywords:forbidden_words", "keywords:existence", "language:response_language",
            "detectable_format:title", "punctuation:no_comma",
        },
        "combination:repeat_prompt": every - {
            "keywords:existence", "detectable_format:title", "punctuation:no_comma",
        },
        "change_case:capital_word_frequency": {"change_case:english_lowercase", "change_case:english_capital"},
        "change_case:english_lowercase": {"change_case:english_capital"},
        "startend:quotation": {"detectable_format:title"},
    }
    symmetric: dict[str, set[str]] = {t: {t} for t in every}
    for a, others in table.items():
        for b in others:
            symmetric[a].add(b)
            symmetric[b].add(a)
    return {t: frozenset(s) for t, s in symmetric.items()}


CONFLICTS: dict[str, frozenset[str]] = _build_conflicts()


def conflicts(a: str, b: str) -> bool:
    """True when constraints of types `a` and `b` must not be given together."""
    return b in CONFLICTS[a]


def _eligible(type_ids: Iterable[str] | None, taken: Sequence[Constraint], prompt: str) -> list[str]:
    pool = sorted(CONSTRAINT_TYPES) if type_ids is None else list(type_ids)
    unknown = [t for t in pool if t not in CONSTRAINT_TYPES]
    if unknown:
        raise ValueError(f"unknown constraint types {unknown}")
    return [
        t for t in pool
        if not any(conflicts(t, c.type_id) for c in taken)
        and (prompt.strip() or not CONSTRAINT_TYPES[t].needs_prompt)
    ]


def sample_constraint(
    rng: random.Random,
    type_ids: Iterable[str] | None = None,
    avoid_conflicts_with: Sequence[Constraint] = (),
    prompt: str = "",
) -> Constraint:
    """One constraint of a type drawn uniformly from `type_ids` (default: all) that conflicts with
    none of `avoid_conflicts_with`. `prompt` feeds keyword choices and `combination:repeat_prompt`
    (never drawn without a prompt). Raises ValueError when no type is left."""
    pool = _eligible(type_ids, avoid_conflicts_with, prompt)
    if not pool:
        raise ValueError("no constraint type left that avoids the given conflicts")
    type_id = rng.choice(pool)
    return Constraint(type_id, CONSTRAINT_TYPES[type_id].sample_kwargs(rng, prompt))


def sample_constraints(
    rng: random.Random,
    n: int,
    type_ids: Iterable[str] | None = None,
    avoid_conflicts_with: Sequence[Constraint] = (),
    prompt: str = "",
) -> list[Constraint]:
    """`n` mutually compatible constraints of distinct types (compatible too with
    `avoid_conflicts_with`, e.g. those of earlier turns). Raises ValueError when the allowed types
    hold no such set."""
    pool = _eligible(type_ids, avoid_conflicts_with, prompt)
    # Greedy picking can corner itself (json_format + both keyword types leaves nothing), so the
    # types are chosen by a randomised search that backtracks; it fails only when no set exists.
    chosen = _compatible_types(rng, pool, n, set())
    if chosen is None:
        raise ValueError(f"cannot pick {n} mutually compatible constraints from {len(pool)} eligible types")
    return [Constraint(t, CONSTRAINT_TYPES[t].sample_kwargs(rng, prompt)) for t in chosen]


def _compatible_types(rng: random.Random, pool: list[str], n: int, dead: set[frozenset[str]]) -> list[str] | None:
    if n == 0:
        return []
    key = frozenset(pool)
    if len(pool) < n or key in dead:
        return None
    order = list(pool)
    rng.shuffle(order)
    for t in order:
        rest = [u for u in pool if not conflicts(t, u)]
        tail = _compatible_types(rng, rest, n - 1, dead)
        if tail is not None:
            return [t, *tail]
    dead.add(key)  # no n-subset here, whatever the order: never search this pool again
    return None
