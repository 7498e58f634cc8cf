"""List parsing: each format by hand, hypothesis round-trips (render, parse back), grounding, stats."""
from __future__ import annotations

import json

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nemotron.sdg.parsing import ParsedList, ParseStats, clean_item, keep_grounded, normalize_item, parse_list

# Words are letters/digits with an optional trailing punctuation mark, so items never start with a
# list marker, a quote or a YAML indicator, and never end with a separator that cleaning removes.
_word = st.builds(
    lambda core, tail: core + tail,
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789éü", min_size=1, max_size=8),
    st.sampled_from(["", "", "", "?", ".", "!", "'", ":"]),
)
_item = st.lists(_word, min_size=1, max_size=6).map(" ".join)
_items = st.lists(_item, min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(_items, st.booleans(), st.booleans())
def test_json_round_trip(items, fenced, preamble):
    body = json.dumps(items, ensure_ascii=False)
    if fenced:
        body = f"```json\n{body}\n```"
    text = ("Here is the list you asked for:\n" if preamble else "") + body + ("\nHope it helps." if preamble else "")
    assert parse_list(text) == ParsedList(items, "json")


@settings(max_examples=150, deadline=None)
@given(_items)
def test_yaml_round_trip(items):
    text = yaml.safe_dump({"topics": items}, allow_unicode=True, width=10_000)
    assert parse_list(text) == ParsedList(items, "yaml")


@settings(max_examples=150, deadline=None)
@given(_items, st.sampled_from(["{}.", "{})", "({})"]), st.booleans())
def test_numbered_round_trip(items, style, bold):
    lines = [style.format(i + 1) + " " + (f"**{x}**" if bold else x) for i, x in enumerate(items)]
    text = "Sure, here are some ideas:\n\n" + "\n".join(lines) + "\n\nLet me know if you need more."
    assert parse_list(text) == ParsedList(items, "numbered")


@settings(max_examples=150, deadline=None)
@given(_items, st.sampled_from(["-", "*", "•"]))
def test_bulleted_round_trip(items, marker):
    text = "\n".join(f"{marker} {x}" for x in items)
    parsed = parse_list(text)
    assert parsed.items == items
    # "- a" lines are also a YAML list; YAML comes first in the order unless an item is not a plain
    # string for YAML ("- a: b" is a mapping), where the bullet parser takes over.
    assert parsed.method in (("yaml", "bulleted") if marker == "-" else ("bulleted",))


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_never_raises(text):
    parsed = parse_list(text)
    assert parsed.method in ("json", "yaml", "numbered", "bulleted", "none")
    assert (parsed.method == "none") == (parsed.items == [])
    assert all(isinstance(i, str) and i for i in parsed.items)


def test_hand_written_cases():
    assert parse_list("Topics:\n```\n[\"a\", \"b\"]\n```") == ParsedList(["a", "b"], "json")
    assert parse_list('{"questions": ["Why?", "How?"]}') == ParsedList(["Why?", "How?"], "json")
    assert parse_list("- yes\n- 1.10\n- null") == ParsedList(["yes", "1.10", "null"], "yaml")
    assert parse_list("1. Alpha\n   continued\n2. Beta\n   - sub point\n3. Gamma") == ParsedList(
        ["Alpha continued", "Beta", "Gamma"], "numbered")
    assert parse_list("* 'one'\n* “two”\n  * nested\n* `three`") == ParsedList(["one", "two", "three"], "bulleted")
    assert parse_list("See [1] and [2].\n1. x\n2. y") == ParsedList(["x", "y"], "numbered")
    assert parse_list("No list here, just prose.") == ParsedList([], "none")
    assert parse_list("[]") == ParsedList([], "none")
    assert parse_list("") == ParsedList([], "none")


def test_clean_item():
    assert clean_item('  **"Climate change"**, ') == "Climate change"
    assert clean_item("*Solar power*") == "Solar power"
    assert clean_item("The **big** idea") == "The big idea"


def test_keep_grounded():
    source = "Here you go:\n1. **Climate Change** and its effects\n2. Smart cities\n3. Ocean-floor mapping"
    kept, rejected = keep_grounded(
        ["climate change", "Smart Cities!", "ocean floor mapping", "Space travel", "art", ""], source)
    assert kept == ["climate change", "Smart Cities!", "ocean floor mapping"]
    assert rejected == ["Space travel", "art", ""]  # "art" only occurs inside "Smart"
    assert normalize_item("  Ｃafé—au_lait ") == "café au lait"


def test_parse_stats():
    stats = ParseStats()
    stats.record(parse_list("1. a\n2. b\n3. c"), rejected=1)
    stats.record(parse_list('["x"]'))
    stats.record(parse_list("nothing"))
    other = ParseStats()
    other.record(parse_list("- p\n- q"))
    stats.merge(other)
    assert stats.to_dict() == {"by_method": {"numbered": 1, "json": 1, "yaml": 1}, "failures": 1,
                               "items": 5, "rejected_items": 1}
    json.dumps(stats.to_dict())
