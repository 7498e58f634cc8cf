"""Every prompt a pipeline sends, by name, with the placeholders it may use.

A pipeline config can replace any of them (`prompts: {open_questions: "..."}` in a stage); a
replacement may use only the placeholders of the prompt it replaces, checked when the config loads.
"""
from __future__ import annotations

import string
from collections.abc import Mapping

from nemotron.sdg.prompts import conversation as _conv
from nemotron.sdg.prompts import generation as _gen
from nemotron.sdg.prompts.conversation import DEFAULT_PERSONAS, transcript
from nemotron.sdg.prompts.generation import DOMAIN_NAMES, MATH_LEVELS, PYTHON_LEVELS

PROMPTS: dict[str, str] = {
    "macro_topics": _gen.MACRO_TOPICS,
    "math_macro_topics": _gen.MATH_MACRO_TOPICS,
    "python_macro_topics": _gen.PYTHON_MACRO_TOPICS,
    "subtopics": _gen.SUBTOPICS,
    "math_subtopics": _gen.MATH_SUBTOPICS,
    "python_subtopics": _gen.PYTHON_SUBTOPICS,
    "open_questions": _gen.OPEN_QUESTIONS,
    "revise_question": _gen.REVISE_QUESTION,
    "writing_tasks": _gen.WRITING_TASKS,
    "revise_writing_task": _gen.REVISE_WRITING_TASK,
    "closed_qa": _gen.CLOSED_QA,
    "closed_qa_prompt": _gen.CLOSED_QA_PROMPT,
    "entity_classifier": _gen.ENTITY_CLASSIFIER,
    "math_problems": _gen.MATH_PROBLEMS,
    "python_problems": _gen.PYTHON_PROBLEMS,
    "solve_math": _gen.SOLVE_MATH,
    "follow_up": _conv.FOLLOW_UP,
    "user_turn": _conv.USER_TURN,
    "multi_turn_constraint": _conv.MULTI_TURN_CONSTRAINT,
    "judge": _conv.JUDGE,
    "reformat_list": _conv.REFORMAT_LIST,
}


def placeholders(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


class PromptBook:
    """The default prompts with a stage's replacements applied."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self.templates = dict(PROMPTS)
        for name, text in (overrides or {}).items():
            if name not in PROMPTS:
                raise ValueError(f"unknown prompt {name!r}; known: {sorted(PROMPTS)}")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"prompt {name!r} must be non-empty text")
            try:
                extra = placeholders(text) - placeholders(PROMPTS[name])
            except ValueError as err:
                raise ValueError(f"prompt {name!r}: {err} (write literal braces as {{{{ and }}}})") from None
            if extra:
                raise ValueError(f"prompt {name!r} uses unknown placeholders {sorted(extra)}; it may use "
                                 f"{sorted(placeholders(PROMPTS[name]))}")
            self.templates[name] = text

    def render(self, name: str, **values: object) -> str:
        return self.templates[name].format(**values)

    def fingerprint(self, names: list[str]) -> dict[str, str]:
        """The texts of the named prompts (part of a stage's identity: changing one is new work)."""
        return {name: self.templates[name] for name in names}


__all__ = ["DEFAULT_PERSONAS", "DOMAIN_NAMES", "MATH_LEVELS", "PROMPTS", "PYTHON_LEVELS", "PromptBook",
           "placeholders", "transcript"]
