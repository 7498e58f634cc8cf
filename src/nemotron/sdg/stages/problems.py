"""Math and Python problems at several levels from topic or keyword seeds, and the yes/no entity
classifier that keeps only seeds relevant to the domain."""
from __future__ import annotations

import re
from pathlib import Path

from nemotron.sdg.answers import answers_match, extract_answer
from nemotron.sdg.prompts import DOMAIN_NAMES, MATH_LEVELS, PYTHON_LEVELS
from nemotron.sdg.stages.base import Stage, StageInputError, Unit, UnitContext, require_text
from nemotron.sdg.store import content_id

DOMAINS = tuple(DOMAIN_NAMES)


def parse_yes_no(text: str) -> bool | None:
    """True for a reply that starts with yes, False for no, None otherwise ("Yes." and "**No**" count)."""
    m = re.match(r"[\s*_\"'`]*(yes|no)\b", text, flags=re.IGNORECASE)
    return None if m is None else m.group(1).lower() == "yes"


def _check_domain(stage: Stage) -> None:
    if stage.opts["domain"] not in DOMAINS:
        raise StageInputError(f"stage {stage.name}: domain must be one of {DOMAINS}, got {stage.opts['domain']!r}")


class Classify(Stage):
    """Keeps the records whose `field` the model says belongs to `domain`."""

    kind = "classify"
    options = {"field": "topic", "domain": "math"}
    prompt_names = ("entity_classifier",)
    text_field = "topic"
    default_sampling = {"temperature": 0.0, "max_tokens": 8}

    def __init__(self, spec, base_dir: Path = Path(".")) -> None:
        super().__init__(spec, base_dir)
        _check_domain(self)
        self.text_field = self.opts["field"]

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        entity = require_text(unit.input, self.opts["field"], self.name)
        domain = self.opts["domain"]
        reply = await ctx.ask(self.prompts.render("entity_classifier", entity=entity, domain=DOMAIN_NAMES[domain]))
        verdict = parse_yes_no(reply)
        if verdict is None:
            ctx.reject("unparseable verdict", "the classifier answered neither yes nor no", reply)
            return []
        if not verdict:
            ctx.reject("classified no", f"not related to {DOMAIN_NAMES[domain]}", entity)
            return []
        return [ctx.record(domain=domain)]


class Problems(Stage):
    """`count` problems per seed and level (one unit each).

    With `reference_answers` (math), each problem is solved `answer_samples` times with different
    seeds and kept with the final `answer` only when every solution reaches the same one: a
    preference stage can then judge replies to it by ground truth, with no answers supplied."""

    kind = "problems"
    options = {"field": "topic", "domain": "math", "levels": [], "reformat": True, "reference_answers": False,
               "answer_samples": 2}
    prompt_names = ("math_problems", "python_problems")
    default_count = 3

    def __init__(self, spec, base_dir: Path = Path(".")) -> None:
        super().__init__(spec, base_dir)
        _check_domain(self)
        default = MATH_LEVELS if self.opts["domain"] == "math" else PYTHON_LEVELS
        self.levels = list(self.opts["levels"] or default)
        if self.opts["reference_answers"]:
            if self.opts["domain"] != "math":
                raise StageInputError(f"stage {self.name}: reference_answers are for math problems")
            self.prompt_names = (*self.prompt_names, "solve_math")

    def units(self, inputs: list[dict]) -> list[Unit]:
        return [Unit(content_id(self.name, r["id"], level), r, {"level": level})
                for r in inputs for level in self.levels]

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        topic = require_text(unit.input, self.opts["field"], self.name)
        domain, level = self.opts["domain"], unit.extra["level"]
        template = "math_problems" if domain == "math" else "python_problems"
        items = await ctx.ask_list(self.prompts.render(template, count=self.count, topic=topic, level=level),
                                   self.count)
        records = []
        for problem in items:
            fields = {"prompt": problem, "topic": topic, "domain": domain, "level": level}
            if self.opts["reference_answers"]:
                answer = await self._reference_answer(ctx, problem)
                if answer is None:
                    continue
                fields.update(answer)
            records.append(ctx.record(**fields))
        return records

    async def _reference_answer(self, ctx: UnitContext, problem: str) -> dict | None:
        solutions = [await ctx.ask(self.prompts.render("solve_math", problem=problem))
                     for _ in range(self.opts["answer_samples"])]
        answers = [extract_answer(s) for s in solutions]
        if answers[0] is None or not all(a is not None and answers_match(a, answers[0]) for a in answers[1:]):
            ctx.reject("no agreed answer", f"{len(solutions)} solutions, final answers {answers}", problem)
            return None
        return {"answer": answers[0], "solution": solutions[0]}
