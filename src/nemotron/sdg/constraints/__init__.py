"""Verifiable instruction-following constraints: the 25 IFEval instruction types (same type ids,
thresholds and relations), each with its own instruction text, a checker and a sampler. The checkers
agree with IFEval's reference code (lm-eval's `ifeval` task, tested side by side) and are stricter
only where that code is plainly wrong; they never pass a response it fails.

    rng = random.Random(0)
    cs = sample_constraints(rng, 2, prompt=prompt)
    full_prompt = apply_constraints(prompt, cs)
    ok = check_all(cs, response, prompt)          # strict; loose=True for IFEval's loose mode
    record["constraints"] = [c.to_dict() for c in cs]
"""
from nemotron.sdg.constraints import content, structure  # noqa: F401  (registers the types)
from nemotron.sdg.constraints.base import (
    AT_LEAST,
    CONSTRAINT_TYPES,
    LESS_THAN,
    RELATIONS,
    Constraint,
    ConstraintType,
    apply_constraints,
    check_all,
)
from nemotron.sdg.constraints.language import LANGUAGE_NAMES, detect_language
from nemotron.sdg.constraints.sampling import CONFLICTS, conflicts, sample_constraint, sample_constraints
from nemotron.sdg.constraints.text import count_sentences, word_tokens, words


def load_checkers() -> None:
    """Load what the checkers use (NLTK with its Punkt model, langdetect's 55 profiles) now: a few
    seconds of CPU once per process, which a pipeline spends before its run starts rather than
    inside it, where it would stall every call in flight."""
    from nemotron.sdg.constraints.language import _factory
    from nemotron.sdg.constraints.text import _sentence_tokenizer, _word_tokenizer

    _sentence_tokenizer(), _word_tokenizer(), _factory()

__all__ = [
    "AT_LEAST", "CONFLICTS", "CONSTRAINT_TYPES", "LANGUAGE_NAMES", "LESS_THAN", "RELATIONS", "Constraint",
    "ConstraintType", "apply_constraints", "check_all", "conflicts", "count_sentences", "detect_language", "load_checkers",
    "sample_constraint", "sample_constraints", "word_tokens", "words",
]
