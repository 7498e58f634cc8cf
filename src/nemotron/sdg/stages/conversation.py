"""Stages that make conversations: instruction-following prompts with verifiable constraints
(single- and multi-turn), two-turn prompts, responses (SFT records), and persona dialogues."""
from __future__ import annotations

from pathlib import Path

from nemotron.sdg.constraints import (CONSTRAINT_TYPES, Constraint, apply_constraints, check_all, load_checkers,
                                     sample_constraints)
from nemotron.sdg.prompts import DEFAULT_PERSONAS, transcript
from nemotron.sdg.stages.base import Stage, StageInputError, Unit, UnitContext, last_user_messages, require_text
from nemotron.sdg.stages.filler import strip_polite_filler


def _constraints(record: dict) -> list[Constraint]:
    return [Constraint.from_dict(c) for c in record.get("constraints") or []]


async def add_follow_up(stage: Stage, messages: list[dict], ctx: UnitContext) -> bool:
    """Append a user follow-up turn written from the conversation so far; False (and the unit
    rejected) when it came back empty or only polite filler."""
    prompt = stage.prompts.render("follow_up", transcript=transcript(messages))
    follow_up = strip_polite_filler(await ctx.ask(prompt, user=True))
    if not follow_up:
        ctx.reject("empty follow-up", "the follow-up turn was empty or only polite filler")
        return False
    messages.append({"role": "user", "content": follow_up})
    return True


class InstructionFollowing(Stage):
    """Verifiable constraints appended to each prompt. With `multi_turn`, they are stated for the
    whole conversation: the record is user (prompt + constraints) → assistant → follow-up user turn,
    and the reply to the follow-up must meet them too (the first reply already does, or the
    conversation is dropped)."""

    kind = "instruction_following"
    options = {"field": "prompt", "constraints": 1, "types": [], "multi_turn": False}
    prompt_names = ("multi_turn_constraint", "follow_up")

    def __init__(self, spec, base_dir: Path = Path(".")) -> None:
        super().__init__(spec, base_dir)
        unknown = sorted(set(self.opts["types"]) - set(CONSTRAINT_TYPES))
        if unknown:
            raise StageInputError(f"stage {self.name}: unknown constraint types {unknown}; known: "
                                  f"{sorted(CONSTRAINT_TYPES)}")

    def prepare(self) -> None:
        if self.opts["multi_turn"]:  # the first reply is checked
            load_checkers()

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        prompt = require_text(unit.input, self.opts["field"], self.name)
        try:
            constraints = sample_constraints(ctx.rng, self.opts["constraints"], self.opts["types"] or None,
                                             prompt=prompt)
        except ValueError as err:
            ctx.reject("no constraints", str(err), prompt)
            return []
        stored = [c.to_dict() for c in constraints]
        if not self.opts["multi_turn"]:
            return [ctx.record(prompt=apply_constraints(prompt, constraints), base_prompt=prompt, constraints=stored)]
        first = self.prompts.render("multi_turn_constraint", prompt=prompt.rstrip(),
                                    instructions=" ".join(c.instruction() for c in constraints))
        messages = [{"role": "user", "content": first}]
        reply = await ctx.chat(messages)
        if not check_all(constraints, reply, prompt):
            ctx.reject("constraint not met", "the first reply breaks a constraint of the conversation", reply)
            return []
        messages.append({"role": "assistant", "content": reply})
        if not await add_follow_up(self, messages, ctx):
            return []
        return [ctx.record(messages=messages, base_prompt=prompt, constraints=stored)]


class TwoTurn(Stage):
    """user → assistant (generated) → a follow-up user turn generated from that history."""

    kind = "two_turn"
    options = {"field": "prompt"}
    prompt_names = ("follow_up",)

    def text(self, record: dict) -> str:
        return transcript(record["messages"])

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        messages = [{"role": "user", "content": require_text(unit.input, self.opts["field"], self.name)}]
        messages.append({"role": "assistant", "content": await ctx.chat(messages)})
        if not await add_follow_up(self, messages, ctx):
            return []
        return [ctx.record(messages=messages)]


class Responses(Stage):
    """`n` replies per prompt (or conversation ending with the user), each an SFT record with the
    full `messages`; scored by the reward model when the stage has one. Records carrying
    constraints are kept only when the reply meets them (`check_constraints`)."""

    kind = "responses"
    options = {"n": 1, "check_constraints": True}
    uses_reward = True

    def prepare(self) -> None:
        if self.opts["check_constraints"]:
            load_checkers()

    def text(self, record: dict) -> str:
        return record["messages"][-1]["content"]

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        conversation = last_user_messages(unit.input, self.name)
        replies = [await ctx.chat(conversation) for _ in range(self.opts["n"])]
        records = []
        for reply in replies:
            if not reply:
                ctx.reject("empty reply", "the model's reply was empty")
                continue
            messages = [*conversation, {"role": "assistant", "content": reply}]
            fields = {"messages": messages}
            if self.spec.reward_model:
                fields["reward"] = await ctx.score(messages)
            records.append(ctx.record(**fields))
        return records

    def check(self, record: dict) -> tuple[str, str] | None:
        constraints = _constraints(record)
        if not (constraints and self.opts["check_constraints"]):
            return None
        prompt = record.get("base_prompt") or record["messages"][0]["content"]
        if not check_all(constraints, self.text(record), prompt):
            failed = [c.type_id for c in constraints if not c.check(self.text(record), prompt)]
            return "constraint not met", f"reply breaks {failed}"
        return None


class Dialogues(Stage):
    """`user_turns` user turns (the first is the input prompt). The model plays the assistant, and
    the stage's `user_model` (default: the same model) a user with a persona; polite filler is cut
    from user turns; the whole dialogue is scored."""

    kind = "dialogues"
    options = {"field": "prompt", "user_turns": 3, "personas": []}
    prompt_names = ("user_turn",)
    uses_reward = True

    def text(self, record: dict) -> str:
        return transcript(record["messages"])

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        personas = self.opts["personas"] or list(DEFAULT_PERSONAS)
        persona = unit.input.get("persona") or ctx.rng.choice(personas)
        first = strip_polite_filler(require_text(unit.input, self.opts["field"], self.name))
        messages = [{"role": "user", "content": first}]
        for turn in range(self.opts["user_turns"]):
            reply = await ctx.chat(messages)
            if not reply:
                ctx.reject("empty reply", f"the assistant's reply {turn + 1} was empty")
                return []
            messages.append({"role": "assistant", "content": reply})
            if turn + 1 == self.opts["user_turns"]:
                break
            user = strip_polite_filler(await ctx.ask(self.prompts.render("user_turn", persona=persona,
                                                                          transcript=transcript(messages)), user=True))
            if not user:
                ctx.reject("empty user turn", f"user turn {turn + 2} was empty or only polite filler")
                return []
            messages.append({"role": "user", "content": user})
        fields = {"messages": messages, "persona": persona}
        if self.spec.reward_model:
            fields["reward"] = await ctx.score(messages)
        return [ctx.record(**fields)]

