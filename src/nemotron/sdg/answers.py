"""Final answers of math responses: find them, normalise them, compare them with a ground truth.

Used to judge preference pairs by ground truth. Extraction prefers the most explicit marker:
the last \\boxed{...}, then "the answer is ...", then "#### ...", then the last number in the text.
Numbers compare exactly as fractions (0.5 == 1/2 == \\frac{1}{2}; "1,000" == 1000; units, degree and
percent signs are dropped, so "50%" == "50"); anything else compares as a normalised string.

Short factual replies are judged against a reference reply instead (`check_reference`): the whole
reply must state what the reference states and nothing else, so a right answer followed by other
claims, or a wrong one anywhere, fails.
"""
from __future__ import annotations

import re
from fractions import Fraction


def _braced(text: str, open_at: int) -> tuple[str, int] | None:
    """Content of the {...} group opening at `open_at`, and the index after its closing brace."""
    if open_at >= len(text) or text[open_at] != "{":
        return None
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1:i], i + 1
    return None  # unbalanced: the model was cut off mid-answer


def extract_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), nested braces included."""
    for m in reversed(list(re.finditer(r"\\(?:boxed|fbox)\s*", text))):
        group = _braced(text, m.end())
        if group is not None:
            return group[0].strip()
        bare = re.match(r"[^\s${]+", text[m.end():])  # "\boxed 5"; an unclosed "{" is no answer
        if bare:
            return bare.group(0)
    return None


_ANSWER_IS = re.compile(
    r"\banswer\s*(?:is|:|=)\s*:?\s*(.+?)(?:\.\s|\.?$|\n)",
    re.IGNORECASE | re.MULTILINE,
)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def extract_answer(response: str) -> str | None:
    boxed = extract_boxed(response)
    if boxed:
        return boxed
    stated = _ANSWER_IS.findall(response)
    if stated and stated[-1].strip():
        return stated[-1].strip()
    hashes = re.findall(r"^\s*####\s*(.+?)\s*$", response, flags=re.MULTILINE)
    if hashes:
        return hashes[-1]
    numbers = _NUMBER.findall(response.replace("−", "-"))
    return numbers[-1].rstrip(",") if numbers else None


def _replace_command(text: str, name: str, arity: int, render) -> str:
    """Replace \\name{a}{b}... (arity groups) by render(*groups), innermost-safe via brace matching."""
    out, i = [], 0
    pattern = re.compile(rf"\\{name}(?![A-Za-z])\s*")
    while (m := pattern.search(text, i)) is not None:
        groups, end = [], m.end()
        for _ in range(arity):
            group = _braced(text, end)
            if group is None:
                # \frac12 shorthand: single-character arguments
                if end < len(text) and text[end].isalnum():
                    group = (text[end], end + 1)
                else:
                    break
            groups.append(group[0])
            end = group[1]
        if len(groups) < arity:
            out.append(text[i:m.end()])
            i = m.end()
            continue
        out.append(text[i:m.start()] + render(*groups))
        i = end
    out.append(text[i:])
    return "".join(out)


_UNIT_WORDS = re.compile(r"^(-?[\d./]+)\s*(?:[a-zA-Z]+\.?\s*)+(?:\^?\d)?$")


def normalize_answer(answer: str) -> str:
    """Canonical form: an exact fraction string ("3/2", "-4") for numbers, else a compact lowercase
    string with LaTeX decoration, units and surrounding punctuation removed."""
    s = answer.strip().replace("−", "-")
    s = re.sub(r"^\$+|\$+$|^\\[(\[]|\\[)\]]$", "", s).strip()
    for cmd in ("text", "textbf", "mathrm", "mathbf", "mbox", "boxed"):
        s = _replace_command(s, cmd, 1, lambda x: x)
    for cmd in ("dfrac", "tfrac", "frac"):
        s = _replace_command(s, cmd, 2, lambda a, b: f"({a})/({b})")
    s = re.sub(r"\\(?:left|right|!|,|;|:|quad|qquad)|\\ ", "", s)
    s = re.sub(r"\^\s*\{?\\circ\}?|°|\\?%|\\\$|\$|\\degree", "", s)
    s = re.sub(r"^[A-Za-z]\s*=\s*", "", s)  # "x = 5"
    s = s.strip().rstrip(".").strip()
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)  # thousands separators
    value = parse_number(s)
    unit = _UNIT_WORDS.match(s) if value is None else None
    if unit:  # "12 cm", "5 apples"
        value = parse_number(unit.group(1))
    if value is not None:
        return str(value)
    s = re.sub(r"\s+", "", s).lower()
    return re.sub(r"^\((\w)\)$", r"\1", s)  # "(B)" -> "b"


_SIMPLE_FRACTION = re.compile(r"^\(?(-?\d+(?:\.\d+)?)\)?/\(?(-?\d+(?:\.\d+)?)\)?$")


def parse_number(text: str) -> Fraction | None:
    """An exact value for integers, decimals, scientific notation and a/b forms, else None."""
    s = re.sub(r"\s+", "", text)
    negate = False
    while s.startswith("-(") and s.endswith(")") or (s.startswith("(") and s.endswith(")") and "/" not in s):
        negate ^= s.startswith("-")
        s = s[2:-1] if s.startswith("-") else s[1:-1]
    try:
        value = Fraction(s)
    except (ValueError, ZeroDivisionError):
        m = _SIMPLE_FRACTION.match(s)
        if not m or Fraction(m.group(2)) == 0:
            return None
        value = Fraction(m.group(1)) / Fraction(m.group(2))
    return -value if negate else value


def answers_match(predicted: str | None, ground_truth: str) -> bool:
    if predicted is None:
        return False
    return normalize_answer(predicted) == normalize_answer(ground_truth)


def check_answer(response: str, ground_truth: str) -> bool:
    """True when the response's final answer equals the ground truth."""
    return answers_match(extract_answer(response), ground_truth)


def normalize_statement(text: str) -> str:
    """Lower case, words and numbers only, one space between them ("is9" reads as "is 9")."""
    s = re.sub(r"(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])", " ", text.lower())
    return " ".join(re.sub(r"[^0-9a-z]+", " ", s).split())


def check_reference(response: str, reference: str | list[str]) -> bool:
    """True when the whole response states exactly one of the reference replies, up to case,
    punctuation and spacing (exact match, as SQuAD scores short answers, over the whole reply)."""
    references = [reference] if isinstance(reference, str) else reference
    said = normalize_statement(response)
    return bool(said) and any(said == normalize_statement(r) for r in references)
