"""Stages that make prompts: seeds, macro topics → subtopics → open questions, writing tasks,
detailed revisions, and closed-QA instructions about documents."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nemotron.sdg.stages.base import Stage, StageInputError, Unit, UnitContext, require_text
from nemotron.sdg.store import content_id

DOCUMENT_TYPES = ["essay", "poem", "short story", "blog post", "email", "speech", "product description",
                  "news article", "cover letter", "dialogue script"]


class Seeds(Stage):
    """Records given in the config (`items`) or read from a file (`path`: JSONL objects or plain text
    lines); plain strings go into `field`."""

    kind = "seeds"
    source = True
    uses_generator = False
    options = {"items": [], "path": "", "field": "topic"}

    def __init__(self, spec, base_dir: Path = Path(".")) -> None:
        super().__init__(spec, base_dir)
        self.text_field = self.opts["field"]
        if not self.opts["items"] and not self.opts["path"]:
            raise StageInputError(f"stage {self.name}: seeds need 'items' or 'path'")

    def _path(self) -> Path:
        path = Path(self.opts["path"]).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def fingerprint(self) -> dict:
        fingerprint = super().fingerprint()
        if self.opts["path"]:
            path = self._path()
            if not path.exists():
                raise StageInputError(f"stage {self.name}: seed file {path} does not exist")
            fingerprint["file_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        return fingerprint

    def units(self, inputs: list[dict]) -> list[Unit]:
        return [Unit(content_id(self.name, "seeds"), None)]

    def _values(self) -> list[object]:
        values: list[object] = list(self.opts["items"])
        if self.opts["path"]:
            path = self._path()
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                if path.suffix == ".jsonl":
                    try:
                        values.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise StageInputError(f"{path}:{number}: not a JSON line ({err.msg})") from None
                else:
                    values.append(line.strip())
        return values

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        records = []
        for value in self._values():
            fields = value if isinstance(value, dict) else {self.text_field: str(value)}
            if not isinstance(fields.get(self.text_field), str) or not fields[self.text_field].strip():
                ctx.reject("missing field", f"seed without a {self.text_field!r} text", json.dumps(value)[:200])
                continue
            records.append(ctx.record(**{k: v for k, v in fields.items() if k not in ("id", "parent", "stage")}))
        return records


class MacroTopics(Stage):
    """`calls` requests, each for `count` broad topics (different seeds, so different lists)."""

    kind = "macro_topics"
    source = True
    options = {"calls": 1, "reformat": True}
    prompt_names = ("macro_topics",)
    text_field = "topic"
    default_count = 20

    def units(self, inputs: list[dict]) -> list[Unit]:
        return [Unit(content_id(self.name, "call", i), None, {"call": i}) for i in range(self.opts["calls"])]

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        topics = await ctx.ask_list(self.prompts.render("macro_topics", count=self.count), self.count)
        return [ctx.record(topic=t) for t in topics]


class Subtopics(Stage):
    kind = "subtopics"
    options = {"field": "topic", "reformat": True}
    prompt_names = ("subtopics",)
    text_field = "topic"
    default_count = 5

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        topic = require_text(unit.input, self.opts["field"], self.name)
        items = await ctx.ask_list(self.prompts.render("subtopics", count=self.count, topic=topic), self.count)
        return [ctx.record(topic=t, parent_topic=topic) for t in items]


class OpenQuestions(Stage):
    kind = "open_questions"
    options = {"field": "topic", "reformat": True}
    prompt_names = ("open_questions",)
    default_count = 5

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        topic = require_text(unit.input, self.opts["field"], self.name)
        items = await ctx.ask_list(self.prompts.render("open_questions", count=self.count, topic=topic), self.count)
        return [ctx.record(prompt=q, topic=topic) for q in items]


class WritingTasks(Stage):
    """One unit per topic and document type."""

    kind = "writing_tasks"
    options = {"field": "topic", "document_types": DOCUMENT_TYPES, "reformat": True}
    prompt_names = ("writing_tasks",)
    default_count = 2

    def units(self, inputs: list[dict]) -> list[Unit]:
        return [Unit(content_id(self.name, r["id"], d), r, {"document_type": d})
                for r in inputs for d in self.opts["document_types"]]

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        topic = require_text(unit.input, self.opts["field"], self.name)
        doc = unit.extra["document_type"]
        items = await ctx.ask_list(self.prompts.render("writing_tasks", count=self.count, topic=topic,
                                                       document_type=doc), self.count)
        return [ctx.record(prompt=t, topic=topic, document_type=doc) for t in items]


class Revise(Stage):
    """Each prompt rewritten to be more detailed (`style`: question or writing task)."""

    kind = "revise"
    options = {"field": "prompt", "style": "question", "keep_original": False}
    prompt_names = ("revise_question", "revise_writing_task")

    def __init__(self, spec, base_dir: Path = Path(".")) -> None:
        super().__init__(spec, base_dir)
        if self.opts["style"] not in ("question", "writing"):
            raise StageInputError(f"stage {self.name}: style must be 'question' or 'writing'")

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        original = require_text(unit.input, self.opts["field"], self.name)
        template = "revise_question" if self.opts["style"] == "question" else "revise_writing_task"
        revised = _unquote(await ctx.ask(self.prompts.render(template, prompt=original)))
        records = [ctx.record(prompt=original)] if self.opts["keep_original"] else []
        if revised:
            records.append(ctx.record(prompt=revised, original=original))
        else:
            ctx.reject("empty reply", "the revision came back empty")
        return records


class ClosedQA(Stage):
    """Instructions answerable from a given document; the prompt holds the document and one of them."""

    kind = "closed_qa"
    options = {"field": "document", "reformat": True}
    prompt_names = ("closed_qa", "closed_qa_prompt")
    default_count = 3

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        document = require_text(unit.input, self.opts["field"], self.name)
        items = await ctx.ask_list(self.prompts.render("closed_qa", count=self.count, document=document), self.count)
        return [ctx.record(prompt=self.prompts.render("closed_qa_prompt", document=document, instruction=i),
                           document=document, instruction=i) for i in items]


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text
