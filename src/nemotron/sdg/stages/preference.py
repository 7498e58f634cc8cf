"""Preference pairs: several replies per prompt, judged by the first judge in `judges` that applies.

- ground_truth: the record has a math `answer` (final answers compared), a `reference` reply (one or
  a list: the whole reply must state it and nothing else, for short factual answers) or
  `constraints` (checked); a pair needs one reply that passes and one that fails. Judge scores 1 and 0.
- reward: the reward model scores every reply; the best and the worst form the pair when their
  weighted scores differ by more than `min_margin`. Judge scores are those weighted scores.
- llm: the judge model compares two replies twice, the second time in swapped order; the pair is
  kept only when both verdicts pick the same reply. Judge scores 1 and 0 (unanimous votes).

A pair is written in TRL's conversational preference format: `prompt` the conversation (a message
list), `chosen` and `rejected` one assistant message each. `judge` names the judge that decided and
`chosen_judge_score`/`rejected_judge_score` hold its verdict. `chosen_reward`/`rejected_reward` are
always the reward model's weighted scalar (one scale for every row, as RPO needs) when the stage has
a reward model, with both replies' attribute scores beside them; null without one.
"""
from __future__ import annotations

import re
from pathlib import Path

from nemotron.sdg.answers import check_answer, check_reference
from nemotron.sdg.constraints import Constraint, check_all, load_checkers
from nemotron.sdg.filters import reward_scalar
from nemotron.sdg.prompts import transcript
from nemotron.sdg.stages.base import Stage, StageInputError, Unit, UnitContext, last_user_messages

JUDGES = ("ground_truth", "reward", "llm")


def parse_verdict(text: str) -> str | None:
    """"A" or "B" from a judge's reply ("A", "**B**", "Reply A", "A is better"); None otherwise."""
    m = re.match(r"[\s*_\"'`(\[]*(?:(?:reply|response|answer)\s+)?([AB])\b", text, flags=re.IGNORECASE)
    return None if m is None else m.group(1).upper()


class Preference(Stage):
    kind = "preference"
    options = {"n": 2, "judges": list(JUDGES), "min_margin": 0.0, "answer_field": "answer",
               "reference_field": "reference", "judge_max_tokens": 16}
    prompt_names = ("judge",)
    uses_reward = True
    uses_judge = True

    def __init__(self, spec, base_dir: Path = Path(".")) -> None:
        super().__init__(spec, base_dir)
        unknown = [j for j in self.opts["judges"] if j not in JUDGES]
        if unknown or not self.opts["judges"]:
            raise StageInputError(f"stage {self.name}: judges must be a non-empty list from {JUDGES}, got {unknown}")
        if self.opts["n"] < 2:
            raise StageInputError(f"stage {self.name}: n must be >= 2 to form pairs")

    def prepare(self) -> None:
        if "ground_truth" in self.opts["judges"]:  # records with constraints are judged by them
            load_checkers()

    def text(self, record: dict) -> str:
        return transcript(record["prompt"])

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        conversation = last_user_messages(unit.input, self.name)
        replies = [await ctx.chat(conversation) for _ in range(self.opts["n"])]
        distinct = list(dict.fromkeys(r for r in replies if r))
        if len(distinct) < 2:
            ctx.reject("identical replies", f"{len(distinct)} distinct non-empty replies out of {len(replies)}")
            return []
        answer = unit.input.get(self.opts["answer_field"])
        reference = unit.input.get(self.opts["reference_field"])
        constraints = [Constraint.from_dict(c) for c in unit.input.get("constraints") or []]
        for judge in self.opts["judges"]:
            if judge == "ground_truth" and (answer is not None or reference is not None or constraints):
                return await self._by_ground_truth(ctx, conversation, distinct, answer, reference, constraints)
            if judge == "reward" and self.spec.reward_model:
                return await self._by_reward(ctx, conversation, distinct)
            if judge == "llm":
                return await self._by_llm(ctx, conversation, distinct)
        ctx.reject("no judge", f"none of {self.opts['judges']} applies to this record")
        return []

    async def _scores(self, ctx: UnitContext, conversation: list, replies: list[str]) -> list[dict] | None:
        if not self.spec.reward_model:
            return None
        return [await ctx.score([*conversation, {"role": "assistant", "content": r}]) for r in replies]

    def _pair(self, ctx: UnitContext, conversation: list, judge: str, chosen: str, rejected: str,
              verdict: tuple[float, float], scores: tuple[dict, dict] | None) -> list[dict]:
        rewards: list[float | None] = [None, None]
        if scores is not None:
            try:
                rewards = [reward_scalar(s) for s in scores]
            except ValueError as err:
                ctx.reject("unusable reward", str(err))
                return []
        fields = {"prompt": conversation, "chosen": [{"role": "assistant", "content": chosen}],
                  "rejected": [{"role": "assistant", "content": rejected}],
                  "chosen_reward": rewards[0], "rejected_reward": rewards[1], "judge": judge,
                  "chosen_judge_score": verdict[0], "rejected_judge_score": verdict[1]}
        if scores is not None:
            fields["chosen_scores"], fields["rejected_scores"] = scores
        return [ctx.record(**fields)]

    async def _by_ground_truth(self, ctx, conversation, replies, answer, reference, constraints) -> list[dict]:
        prompt = conversation[-1]["content"]
        if answer is not None:
            passed = [check_answer(r, str(answer)) for r in replies]
        elif reference is not None:
            passed = [check_reference(r, reference) for r in replies]
        else:
            passed = [check_all(constraints, r, ctx.unit.input.get("base_prompt") or prompt) for r in replies]
        good = [r for r, ok in zip(replies, passed) if ok]
        bad = [r for r, ok in zip(replies, passed) if not ok]
        if not good or not bad:
            ctx.reject("no pair", f"ground truth: {len(good)} of {len(replies)} replies pass; a pair needs both kinds")
            return []
        scores = await self._scores(ctx, conversation, [good[0], bad[0]])
        return self._pair(ctx, conversation, "ground_truth", good[0], bad[0], (1.0, 0.0),
                          None if scores is None else (scores[0], scores[1]))

    async def _by_reward(self, ctx, conversation, replies) -> list[dict]:
        scores = await self._scores(ctx, conversation, replies)
        try:
            scalars = [reward_scalar(s) for s in scores]
        except ValueError as err:
            ctx.reject("unusable reward", str(err))
            return []
        best = max(range(len(replies)), key=lambda i: scalars[i])
        worst = min(range(len(replies)), key=lambda i: scalars[i])
        margin = scalars[best] - scalars[worst]
        if margin <= self.opts["min_margin"]:
            ctx.reject("small margin", f"reward margin {margin:.3f} <= {self.opts['min_margin']:g}")
            return []
        return self._pair(ctx, conversation, "reward", replies[best], replies[worst],
                          (scalars[best], scalars[worst]), (scores[best], scores[worst]))

    async def _by_llm(self, ctx, conversation, replies) -> list[dict]:
        a, b = replies[0], replies[1]
        history = transcript(conversation)
        limits = {"temperature": 0.0, "max_tokens": self.opts["judge_max_tokens"]}
        render = lambda x, y: self.prompts.render("judge", transcript=history, reply_a=x, reply_b=y)  # noqa: E731
        first = await ctx.ask(render(a, b), judge=True, **limits)
        second = await ctx.ask(render(b, a), judge=True, **limits)
        v1, v2 = parse_verdict(first), parse_verdict(second)
        if v1 is None or v2 is None:
            ctx.reject("unparseable verdict", "the judge answered neither A nor B", first if v1 is None else second)
            return []
        pick1 = a if v1 == "A" else b
        pick2 = b if v2 == "A" else a  # the second time, A is b
        if pick1 != pick2:
            ctx.reject("judge disagreement", "the verdict changed when the replies swapped places")
            return []
        other = b if pick1 == a else a
        scores = await self._scores(ctx, conversation, [pick1, other])
        return self._pair(ctx, conversation, "llm", pick1, other, (1.0, 0.0),
                          None if scores is None else (scores[0], scores[1]))
