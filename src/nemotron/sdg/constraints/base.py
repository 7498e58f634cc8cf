"""The `Constraint` record, the contract every constraint type follows, and IFEval's loose mode.

A constraint is data (`type_id` + `kwargs`) so records can store it as JSON; the behaviour lives in
one `ConstraintType` subclass per type id, found through `CONSTRAINT_TYPES`.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

# IFEval's two comparison relations, spelled as its records spell them.
LESS_THAN = "less than"
AT_LEAST = "at least"
RELATIONS = (LESS_THAN, AT_LEAST)

# Filled by `register` when the type modules are imported (the package __init__ imports them all).
CONSTRAINT_TYPES: dict[str, type[ConstraintType]] = {}


class ConstraintType:
    """One verifiable instruction: how to phrase it, how to check it, how to draw its arguments.

    `params` maps each keyword argument to its kind: `int` (a count >= 1 — a threshold of 0 would
    make "less than" unsatisfiable and "at least" trivial), `str` (non-empty), `list` (non-empty
    list of non-empty strings) or a tuple of allowed values.
    """

    type_id: ClassVar[str]
    params: ClassVar[dict[str, Any]] = {}
    needs_prompt: ClassVar[bool] = False  # sampling needs the prompt the constraint is attached to

    @classmethod
    def sample_kwargs(cls, rng: random.Random, prompt: str) -> dict[str, Any]:
        return {}

    @classmethod
    def describe(cls, **kwargs: Any) -> str:
        raise NotImplementedError(cls.type_id)

    @classmethod
    def check(cls, response: str, prompt: str, **kwargs: Any) -> bool:
        raise NotImplementedError(cls.type_id)

    @classmethod
    def validate(cls, kwargs: dict[str, Any]) -> None:
        missing = set(cls.params) - set(kwargs)
        extra = set(kwargs) - set(cls.params)
        if missing or extra:
            raise ValueError(f"{cls.type_id}: expected kwargs {sorted(cls.params)}, got {sorted(kwargs)}")
        for name, kind in cls.params.items():
            value = kwargs[name]
            ok = (
                (kind is int and isinstance(value, int) and not isinstance(value, bool) and value >= 1)
                or (kind is str and isinstance(value, str) and value.strip() != "")
                or (kind is list and isinstance(value, list) and len(value) > 0
                    and all(isinstance(v, str) and v.strip() for v in value))
                or (isinstance(kind, tuple) and value in kind)
            )
            if not ok:
                expected = f"one of {kind}" if isinstance(kind, tuple) else kind.__name__
                raise ValueError(f"{cls.type_id}: kwarg {name!r}={value!r} is not a valid {expected}")


def register(cls: type[ConstraintType]) -> type[ConstraintType]:
    if cls.type_id in CONSTRAINT_TYPES:
        raise ValueError(f"constraint type {cls.type_id} registered twice")
    CONSTRAINT_TYPES[cls.type_id] = cls
    return cls


@dataclass(frozen=True, slots=True)
class Constraint:
    type_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type_id not in CONSTRAINT_TYPES:
            raise ValueError(f"unknown constraint type {self.type_id!r}; known: {sorted(CONSTRAINT_TYPES)}")
        # A private copy: callers mutating their dict (or list) must not change a stored constraint.
        object.__setattr__(self, "kwargs", json.loads(json.dumps(self.kwargs)))
        CONSTRAINT_TYPES[self.type_id].validate(self.kwargs)

    def __hash__(self) -> int:
        return hash((self.type_id, json.dumps(self.kwargs, sort_keys=True)))

    @property
    def spec(self) -> type[ConstraintType]:
        return CONSTRAINT_TYPES[self.type_id]

    def instruction(self) -> str:
        """The sentence appended to a prompt."""
        return self.spec.describe(**self.kwargs)

    def check(self, response: str, prompt: str = "") -> bool:
        """Strict check, as IFEval's strict accuracy: a blank response follows nothing."""
        return bool(response.strip()) and bool(self.spec.check(response, prompt, **self.kwargs))

    def check_loose(self, response: str, prompt: str = "") -> bool:
        """IFEval's loose check: also accept the response with its first and/or last line dropped
        (a preamble like "Sure, here it is:") and with markdown `*` removed."""
        return any(self.check(v, prompt) for v in loose_variants(response))

    def to_dict(self) -> dict[str, Any]:
        return {"type_id": self.type_id, "kwargs": json.loads(json.dumps(self.kwargs))}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Constraint:
        return cls(type_id=data["type_id"], kwargs=dict(data.get("kwargs") or {}))


def loose_variants(response: str) -> list[str]:
    lines = response.split("\n")
    trimmed = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    return trimmed + [t.replace("*", "") for t in trimmed]


def check_all(constraints: list[Constraint], response: str, prompt: str = "", loose: bool = False) -> bool:
    """True when the response satisfies every constraint."""
    if loose:
        return all(c.check_loose(response, prompt) for c in constraints)
    return all(c.check(response, prompt) for c in constraints)


def apply_constraints(prompt: str, constraints: list[Constraint]) -> str:
    """The prompt with each constraint's instruction appended, as the model will see it."""
    if not constraints:
        return prompt
    return prompt.rstrip() + "\n\n" + " ".join(c.instruction() for c in constraints)


# ---- shared by the instruction texts ----

def plural(n: int, noun: str) -> str:
    """"1 paragraph", "3 paragraphs": counts in instructions."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
