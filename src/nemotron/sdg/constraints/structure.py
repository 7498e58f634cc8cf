"""Constraints on the shape of the response: length, paragraphs, sections, lists, highlights, JSON,
titles, fixed answers, two responses, repeating the request. Checks follow IFEval's reference code
(lm-eval's `ifeval` task); where that code is plainly wrong, the check here is stricter, never more
lenient."""
from __future__ import annotations

import json
import re

from nemotron.sdg.constraints.base import LESS_THAN, RELATIONS, ConstraintType, plural, register
from nemotron.sdg.constraints.text import count_sentences, words
from nemotron.sdg.constraints.words import KEYWORDS


def _compare(actual: int, relation: str, threshold: int) -> bool:
    return actual < threshold if relation == LESS_THAN else actual >= threshold


def _bound(relation: str) -> str:
    return "fewer than" if relation == LESS_THAN else "at least"


@register
class NumberSentences(ConstraintType):
    type_id = "length_constraints:number_sentences"
    params = {"num_sentences": int, "relation": RELATIONS}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        relation = rng.choice(RELATIONS)
        low = 2 if relation == LESS_THAN else 1  # "fewer than 1 sentence" cannot be met
        return {"num_sentences": rng.randint(low, 20), "relation": relation}

    @classmethod
    def describe(cls, num_sentences, relation):
        return f"Your reply should be {_bound(relation)} {plural(num_sentences, 'sentence')} long."

    @classmethod
    def check(cls, response, prompt, num_sentences, relation):
        return _compare(count_sentences(response), relation, num_sentences)


def _divider_paragraphs(response: str) -> list[str] | None:
    """Paragraphs separated by the markdown divider *** (IFEval's split); None when an inner
    paragraph is empty. Empty text before the first or after the last divider is no paragraph."""
    parts = re.split(r"\s?\*\*\*\s?", response)
    inner = parts[1:-1]
    if any(not p.strip() for p in inner):
        return None
    return [p for p in parts if p.strip()]


@register
class NumberParagraphs(ConstraintType):
    type_id = "length_constraints:number_paragraphs"
    params = {"num_paragraphs": int}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"num_paragraphs": rng.randint(1, 5)}

    @classmethod
    def describe(cls, num_paragraphs):
        return (f"Write exactly {plural(num_paragraphs, 'paragraph')}, separating paragraphs with a "
                "markdown divider line: ***")

    @classmethod
    def check(cls, response, prompt, num_paragraphs):
        paragraphs = _divider_paragraphs(response)
        return paragraphs is not None and len(paragraphs) == num_paragraphs


@register
class NumberWords(ConstraintType):
    type_id = "length_constraints:number_words"
    params = {"num_words": int, "relation": RELATIONS}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"num_words": 10 * rng.randint(10, 50), "relation": rng.choice(RELATIONS)}

    @classmethod
    def describe(cls, num_words, relation):
        return f"Use {_bound(relation)} {num_words} words in your reply."

    @classmethod
    def check(cls, response, prompt, num_words, relation):
        return _compare(len(words(response)), relation, num_words)


@register
class NthParagraphFirstWord(ConstraintType):
    type_id = "length_constraints:nth_paragraph_first_word"
    params = {"num_paragraphs": int, "nth_paragraph": int, "first_word": str}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        n = rng.randint(1, 5)
        return {"num_paragraphs": n, "nth_paragraph": rng.randint(1, n), "first_word": rng.choice(KEYWORDS)}

    @classmethod
    def validate(cls, kwargs):
        super().validate(kwargs)
        if kwargs["nth_paragraph"] > kwargs["num_paragraphs"]:
            raise ValueError(f"{cls.type_id}: nth_paragraph {kwargs['nth_paragraph']} > num_paragraphs")

    @classmethod
    def describe(cls, num_paragraphs, nth_paragraph, first_word):
        return (f"Write exactly {plural(num_paragraphs, 'paragraph')}, separated from each other by one "
                f'blank line (and only paragraphs are separated that way). Paragraph {nth_paragraph} '
                f'must begin with the word "{first_word}".')

    @classmethod
    def check(cls, response, prompt, num_paragraphs, nth_paragraph, first_word):
        # IFEval splits on "\n\n" and drops empty pieces from the count but not from the index, so
        # after a stray blank line it reads the wrong paragraph: both readings must pass here.
        pieces = response.split("\n\n")
        paragraphs = [p for p in pieces if p.strip()]
        if len(paragraphs) != num_paragraphs:  # so nth_paragraph <= len(pieces) too
            return False
        word = first_word.lower()
        return _first_word(paragraphs[nth_paragraph - 1]) == word and _first_word(pieces[nth_paragraph - 1]) == word


def _first_word(paragraph: str) -> str:
    """IFEval's first word: the first whitespace token less leading quotes, cut at . , ? ! ' \"."""
    tokens = paragraph.split()
    if not tokens:
        return ""
    word = tokens[0].lstrip("'").lstrip('"')
    return re.split(r"""[.,?!'"]""", word, maxsplit=1)[0].lower()


_RULE = re.compile(r"^[ \t]*(?:-[ \t]*){2,}$", flags=re.MULTILINE)  # ---, - - -


def _bullets(response: str) -> int:
    """IFEval's count: lines opening with "*" not followed by "*", or with "-"."""
    return (len(re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE))
            + len(re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)))


@register
class NumberBulletLists(ConstraintType):
    type_id = "detectable_format:number_bullet_lists"
    params = {"num_bullets": int}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"num_bullets": rng.randint(1, 5)}

    @classmethod
    def describe(cls, num_bullets):
        return (f"Your reply must contain exactly {plural(num_bullets, 'bullet point')}, written as "
                "markdown bullets:\n* first point\n* second point")

    @classmethod
    def check(cls, response, prompt, num_bullets):
        # IFEval also counts a "---" rule as a bullet, so 2 bullets and a rule pass for 3: a reply
        # with a rule fails here whatever the count (with 3 bullets and a rule it fails there too).
        return _RULE.search(response) is None and _bullets(response) == num_bullets


CONSTRAINED_RESPONSE_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


@register
class ConstrainedResponse(ConstraintType):
    type_id = "detectable_format:constrained_response"

    @classmethod
    def describe(cls):
        options = ", ".join(f'"{o}"' for o in CONSTRAINED_RESPONSE_OPTIONS)
        return f"Reply with one of these options only: {options}"

    @classmethod
    def check(cls, response, prompt):
        return any(option in response for option in CONSTRAINED_RESPONSE_OPTIONS)


@register
class NumberHighlightedSections(ConstraintType):
    type_id = "detectable_format:number_highlighted_sections"
    params = {"num_highlights": int}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"num_highlights": rng.randint(1, 4)}

    @classmethod
    def describe(cls, num_highlights):
        return (f"Highlight at least {plural(num_highlights, 'section')} of your reply with markdown "
                "emphasis, for example *an important part*.")

    @classmethod
    def check(cls, response, prompt, num_highlights):
        # IFEval's: *x* and **x** on one line, with something other than spaces inside.
        single = sum(1 for h in re.findall(r"\*[^\n\*]*\*", response) if h.strip("*").strip())
        double = sum(1 for h in re.findall(r"\*\*[^\n\*]*\*\*", response) if h[2:-2].strip())
        return single + double >= num_highlights


@register
class MultipleSections(ConstraintType):
    type_id = "detectable_format:multiple_sections"
    params = {"section_spliter": ("Section", "SECTION"), "num_sections": int}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"section_spliter": rng.choice(["Section", "SECTION"]), "num_sections": rng.randint(2, 5)}

    @classmethod
    def describe(cls, section_spliter, num_sections):
        return (f"Organise your reply into {num_sections} sections, starting each one with a line "
                f"\"{section_spliter} N\", for example:\n{section_spliter} 1\n[first section]\n"
                f"{section_spliter} 2\n[second section]")

    @classmethod
    def check(cls, response, prompt, section_spliter, num_sections):
        # IFEval's, case-sensitive: asking for SECTION and getting "Section" is not following it.
        return len(re.split(rf"\s?{section_spliter}\s?\d+\s?", response)) - 1 >= num_sections


def _strip_fence(text: str) -> str:
    """IFEval's unwrapping: an opening ``` (bare or tagged json/Json/JSON) and a closing ```."""
    text = text.strip()
    for prefix in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(prefix)
    return text.removesuffix("```").strip()


@register
class JsonFormat(ConstraintType):
    type_id = "detectable_format:json_format"

    @classmethod
    def describe(cls):
        return ("Format your entire reply as valid JSON; you may wrap it in a ```json code block, with "
                "nothing outside it.")

    @classmethod
    def check(cls, response, prompt):
        try:
            json.loads(_strip_fence(response))
        except ValueError:
            return False
        return True


@register
class Title(ConstraintType):
    type_id = "detectable_format:title"

    @classmethod
    def describe(cls):
        return "Give your reply a title inside double angle brackets, like <<a title here>>."

    @classmethod
    def check(cls, response, prompt):
        return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", response))


@register
class TwoResponses(ConstraintType):
    type_id = "combination:two_responses"

    @classmethod
    def describe(cls):
        return ("Write two different replies, separated by a line of six asterisks (******) and by "
                "nothing else.")

    @classmethod
    def check(cls, response, prompt):
        parts = response.split("******")
        if any(not p.strip() for p in parts[1:-1]):
            return False
        answers = [p.strip() for p in parts if p.strip()]
        return len(answers) == 2 and answers[0] != answers[1]


@register
class RepeatPrompt(ConstraintType):
    type_id = "combination:repeat_prompt"
    params = {"prompt_to_repeat": str}
    needs_prompt = True

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"prompt_to_repeat": prompt.strip()}

    @classmethod
    def describe(cls, prompt_to_repeat):
        return ("Before answering, copy the request above word for word, with nothing before it and "
                "without this sentence; then give your answer.")

    @classmethod
    def check(cls, response, prompt, prompt_to_repeat):
        return response.strip().lower().startswith(prompt_to_repeat.strip().lower())
