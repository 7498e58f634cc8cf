"""Turn a model's list-shaped output (topics, questions, ...) into items, locally and without raising.

`parse_list` tries, in order: a JSON list (bare, inside ``` fences, or after a leading sentence),
a YAML list, numbered lines, bulleted lines. The first that yields at least one item wins. When none
does, the result is empty with method "none": the caller may ask an LLM to reformat, then call
`keep_grounded` to drop items the reformatter invented.
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

import yaml

METHODS = ("json", "yaml", "numbered", "bulleted")


@dataclass(slots=True)
class ParsedList:
    items: list[str]
    method: str  # one of METHODS, or "none"

    @property
    def ok(self) -> bool:
        return self.method != "none"


def parse_list(text: str) -> ParsedList:
    for method, parser in (("json", _parse_json), ("yaml", _parse_yaml),
                           ("numbered", _parse_numbered), ("bulleted", _parse_bulleted)):
        items = [c for c in (clean_item(i) for i in parser(text)) if c]
        if items:
            return ParsedList(items, method)
    return ParsedList([], "none")


_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)```", re.DOTALL)
_MAX_JSON_STARTS = 32  # bracket positions tried per text; bounds the cost on bracket-heavy prose


def _scalars(value: object) -> list[str] | None:
    """A list of scalars (or an object holding exactly one such list, e.g. {"topics": [...]})."""
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        return None
    if not any(isinstance(v, str) for v in value):
        return None  # "[1]" in prose is a citation, not a list
    return [str(v) for v in value]


def _parse_json(text: str) -> list[str]:
    decoder = json.JSONDecoder()
    for candidate in [*_FENCE.findall(text), text]:
        starts = [m.start() for m in re.finditer(r"[\[{]", candidate)][:_MAX_JSON_STARTS]
        for start in starts:
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except ValueError:
                continue
            items = _scalars(value)
            if items is not None:
                return items
    return []


_YAML_LIST = re.compile(r"^\s*-(?:\s|$)|\[", re.MULTILINE)  # a YAML list needs "- " items or [ ... ]


def _parse_yaml(text: str) -> list[str]:
    for candidate in [*_FENCE.findall(text), text]:
        if not _YAML_LIST.search(candidate):
            continue  # cannot hold a list: skip the (slow) YAML parser
        try:
            # BaseLoader keeps every scalar a string: "- yes" stays "yes", "- 1.10" stays "1.10".
            value = yaml.load(candidate, Loader=yaml.BaseLoader)
        except yaml.YAMLError:
            continue
        items = _scalars(value)
        if items is not None:
            return items
    return []


_NUMBERED = re.compile(r"^(\s*)(?:\d{1,4}[.)]|\(\d{1,4}\))\s+(\S.*)$")
_BULLETED = re.compile(r"^(\s*)[-*•+]\s+(\S.*)$")


def _parse_marked(text: str, marker: re.Pattern[str]) -> list[str]:
    """Items are lines with the marker at the shallowest indentation used; an indented unmarked line
    right below an item continues it. Deeper marked lines (sub-lists) and prose around are dropped."""
    matches = [marker.match(line) for line in text.splitlines()]
    depths = [len(m.group(1).expandtabs(4)) for m in matches if m]
    if not depths:
        return []
    top = min(depths)
    items: list[str] = []
    open_item = False
    for line, m in zip(text.splitlines(), matches):
        if m and len(m.group(1).expandtabs(4)) == top:
            items.append(m.group(2))
            open_item = True
        elif open_item and line.strip() and line[:1].isspace() and not m and not _is_marked(line):
            items[-1] += " " + line.strip()
        else:
            open_item = False
    return items


def _is_marked(line: str) -> bool:
    return bool(_NUMBERED.match(line) or _BULLETED.match(line))


def _parse_numbered(text: str) -> list[str]:
    return _parse_marked(text, _NUMBERED)


def _parse_bulleted(text: str) -> list[str]:
    return _parse_marked(text, _BULLETED)


# (opening, closing) characters peeled off an item: quotes, inline code, *italic*, _italic_.
_WRAPPERS = ('""', "''", "“”", "‘’", "``", "**", "__")


def clean_item(item: str) -> str:
    """Strip markdown emphasis, surrounding quotes and trailing list separators."""
    text = item.strip().rstrip(",;").strip()
    text = re.sub(r"(\*\*|__)(.+?)\1", r"\2", text)
    while len(text) >= 2 and any(text[0] == a and text[-1] == b for a, b in _WRAPPERS):
        text = text[1:-1].strip()
    return text


def normalize_item(text: str) -> str:
    """Comparison form: NFKC, case-folded, every run of non-alphanumerics turned into one space."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def keep_grounded(items: list[str], source: str) -> tuple[list[str], list[str]]:
    """(kept, rejected): an item is kept when its normalised words occur, as a whole-word run, in the
    normalised source response. Guards against a reformatting LLM adding or rewording items."""
    haystack = f" {normalize_item(source)} "
    kept: list[str] = []
    rejected: list[str] = []
    for item in items:
        needle = normalize_item(item)
        (kept if needle and f" {needle} " in haystack else rejected).append(item)
    return kept, rejected


@dataclass(slots=True)
class ParseStats:
    """Counters a stage reports at the end; recording never raises."""

    by_method: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    items: int = 0
    rejected_items: int = 0

    def record(self, parsed: ParsedList, rejected: int = 0) -> None:
        if parsed.ok:
            self.by_method[parsed.method] += 1
        else:
            self.failures += 1
        self.items += len(parsed.items) - rejected
        self.rejected_items += rejected

    def merge(self, other: ParseStats) -> None:
        self.by_method.update(other.by_method)
        self.failures += other.failures
        self.items += other.items
        self.rejected_items += other.rejected_items

    def to_dict(self) -> dict[str, object]:
        return {"by_method": dict(self.by_method), "failures": self.failures, "items": self.items,
                "rejected_items": self.rejected_items}
