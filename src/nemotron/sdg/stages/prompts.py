"""Stages that make prompts: seeds, macro topics → subtopics → open questions, writing tasks,
detailed revisions, and closed-QA instructions about documents."""
from __future__ import annotations

import hashlib
import json
import re
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
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise StageInputError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
            for number, line in enumerate(text.splitlines(), 1):
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


TOPIC_DOMAINS = ("general", "math", "python")


def _domain_prompt(stage: Stage, base: str) -> str:
    """The prompt for the stage's `domain`: "macro_topics", "math_macro_topics" ..."""
    domain = stage.opts["domain"]
    if domain not in TOPIC_DOMAINS:
        raise StageInputError(f"stage {stage.name}: domain must be one of {TOPIC_DOMAINS}, got {domain!r}")
    return base if domain == "general" else f"{domain}_{base}"


class MacroTopics(Stage):
    """`calls` requests, each for `count` broad topics (different seeds, so different lists); with
    `domain: math` or `python`, areas of mathematics or of Python programming."""

    kind = "macro_topics"
    source = True
    options = {"calls": 1, "reformat": True, "domain": "general"}
    prompt_names = ("macro_topics", "math_macro_topics", "python_macro_topics")
    text_field = "topic"
    default_count = 20

    def __init__(self, spec, base_dir: Path = Path(".")) -> None:
        super().__init__(spec, base_dir)
        self.prompt = _domain_prompt(self, "macro_topics")
        self.prompt_names = (self.prompt,)  # only the prompt in use is part of the stage's identity

    def units(self, inputs: list[dict]) -> list[Unit]:
        return [Unit(content_id(self.name, "call", i), None, {"call": i}) for i in range(self.opts["calls"])]

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        topics = await ctx.ask_list(self.prompts.render(self.prompt, count=self.count), self.count)
        domain = {} if self.opts["domain"] == "general" else {"domain": self.opts["domain"]}
        return [ctx.record(topic=t, **domain) for t in topics]


class Subtopics(Stage):
    """`count` subtopics per topic; `domain: math` or `python` asks for problem-sized topics."""

    kind = "subtopics"
    options = {"field": "topic", "reformat": True, "domain": "general"}
    prompt_names = ("subtopics", "math_subtopics", "python_subtopics")
    text_field = "topic"
    default_count = 5

    def __init__(self, spec, base_dir: Path = Path(".")) -> None:
        super().__init__(spec, base_dir)
        self.prompt = _domain_prompt(self, "subtopics")
        self.prompt_names = (self.prompt,)

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        topic = require_text(unit.input, self.opts["field"], self.name)
        items = await ctx.ask_list(self.prompts.render(self.prompt, count=self.count, topic=topic), self.count)
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
    """Each prompt rewritten to be more detailed (`style`: question or writing task), `n` times
    (different seeds, so different revisions). A revision must keep the original's subject: at
    least `min_overlap` of the original's content words (compared by their first five letters, so
    "economy" meets "economic") must appear in it, else it is rejected as unrelated."""

    kind = "revise"
    options = {"field": "prompt", "style": "question", "keep_original": False, "n": 1, "min_overlap": 0.3}
    prompt_names = ("revise_question", "revise_writing_task")

    def __init__(self, spec, base_dir: Path = Path(".")) -> None:
        super().__init__(spec, base_dir)
        if self.opts["style"] not in ("question", "writing"):
            raise StageInputError(f"stage {self.name}: style must be 'question' or 'writing'")
        if not 0.0 <= self.opts["min_overlap"] <= 1.0:
            raise StageInputError(f"stage {self.name}: min_overlap must be in [0, 1]")

    async def run(self, unit: Unit, ctx: UnitContext) -> list[dict]:
        original = require_text(unit.input, self.opts["field"], self.name)
        template = "revise_question" if self.opts["style"] == "question" else "revise_writing_task"
        records = [ctx.record(prompt=original)] if self.opts["keep_original"] else []
        seen = set()
        for _ in range(self.opts["n"]):
            revised = _unquote(await ctx.ask(self.prompts.render(template, prompt=original)))
            overlap = relatedness(original, revised)
            if not revised:
                ctx.reject("empty reply", "the revision came back empty")
            elif overlap < self.opts["min_overlap"]:
                ctx.reject("unrelated revision", f"{overlap:.0%} of the original's content words kept "
                           f"(< {self.opts['min_overlap']:.0%})", revised)
            elif revised not in seen:
                seen.add(revised)
                records.append(ctx.record(prompt=revised, original=original))
        return records


_STOPWORDS = frozenset("""a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has have having
he her here hers him his how i if in into is it its itself just me more most my no nor not of off on once only or
other our ours out over own same she should so some such than that the their theirs them then there these they this
those through to too under until up very was we were what when where which while who whom why will with would you
your yours write explain describe tell give make please""".split())


def _stems(text: str) -> set[str]:
    words = re.findall(r"[^\W_]+", text.casefold())
    return {w[:5] for w in words if len(w) >= 3 and w not in _STOPWORDS}


def relatedness(original: str, revised: str) -> float:
    """Share of the original's content words (by stem) found in the revision; 1.0 when the original
    has none to compare."""
    wanted = _stems(original)
    return len(wanted & _stems(revised)) / len(wanted) if wanted else 1.0


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
