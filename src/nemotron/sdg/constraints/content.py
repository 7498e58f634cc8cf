"""Constraints on what the response says: keywords, language, case, punctuation, placeholders,
postscripts, and how it starts or ends. Thresholds and relations follow IFEval."""
from __future__ import annotations

import random
import re

from nemotron.sdg.constraints.base import LESS_THAN, RELATIONS, ConstraintType, plural, register
from nemotron.sdg.constraints.language import LANGUAGE_NAMES, detect_language
from nemotron.sdg.constraints.words import KEYWORDS, prompt_keywords


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _relation_phrase(relation: str, n: int) -> str:
    return f"fewer than {_times(n)}" if relation == LESS_THAN else f"at least {_times(n)}"


def _compare(actual: int, relation: str, threshold: int) -> bool:
    return actual < threshold if relation == LESS_THAN else actual >= threshold


def _quoted_list(items: list[str]) -> str:
    quoted = [f'"{w}"' for w in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _draw_keywords(rng: random.Random, prompt: str, n: int) -> list[str]:
    """Half the time from the prompt's own content words (so the keywords fit the topic), otherwise
    from the generic list; always `n` distinct words."""
    from_prompt = prompt_keywords(prompt)
    pool = from_prompt if len(from_prompt) >= n and rng.random() < 0.5 else list(KEYWORDS)
    return sorted(rng.sample(pool, n))


def _count_word(text: str, word: str) -> int:
    # Whole-word, case-insensitive: IFEval's bare substring search would count "art" inside "start".
    return len(re.findall(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE))


@register
class KeywordsExistence(ConstraintType):
    type_id = "keywords:existence"
    params = {"keywords": list}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"keywords": _draw_keywords(rng, prompt, 2)}

    @classmethod
    def describe(cls, keywords):
        return f"Be sure to use the words {_quoted_list(keywords)} somewhere in your reply."

    @classmethod
    def check(cls, response, prompt, keywords):
        return all(_count_word(response, k) > 0 for k in keywords)


@register
class KeywordsFrequency(ConstraintType):
    type_id = "keywords:frequency"
    params = {"keyword": str, "frequency": int, "relation": RELATIONS}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        relation = rng.choice(RELATIONS)
        # "fewer than once" is a clumsy way to forbid a word; forbidden_words covers that.
        frequency = rng.randint(2, 3) if relation == LESS_THAN else rng.randint(1, 3)
        return {"keyword": _draw_keywords(rng, prompt, 1)[0], "frequency": frequency, "relation": relation}

    @classmethod
    def describe(cls, keyword, frequency, relation):
        return f'The word "{keyword}" should appear {_relation_phrase(relation, frequency)} in your reply.'

    @classmethod
    def check(cls, response, prompt, keyword, frequency, relation):
        return _compare(_count_word(response, keyword), relation, frequency)


@register
class KeywordsForbidden(ConstraintType):
    type_id = "keywords:forbidden_words"
    params = {"forbidden_words": list}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"forbidden_words": _draw_keywords(rng, prompt, 2)}

    @classmethod
    def describe(cls, forbidden_words):
        return f"Do not use the words {_quoted_list(forbidden_words)} anywhere in your reply."

    @classmethod
    def check(cls, response, prompt, forbidden_words):
        return all(_count_word(response, w) == 0 for w in forbidden_words)


@register
class KeywordsLetterFrequency(ConstraintType):
    type_id = "keywords:letter_frequency"
    params = {"letter": tuple("abcdefghijklmnopqrstuvwxyz"), "let_frequency": int, "let_relation": RELATIONS}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"letter": rng.choice("abcdefghijklmnopqrstuvwxyz"), "let_frequency": rng.randint(1, 10),
                "let_relation": rng.choice(RELATIONS)}

    @classmethod
    def describe(cls, letter, let_frequency, let_relation):
        return (f'The letter "{letter}" (upper or lower case) should appear '
                f"{_relation_phrase(let_relation, let_frequency)} in your reply.")

    @classmethod
    def check(cls, response, prompt, letter, let_frequency, let_relation):
        return _compare(response.lower().count(letter), let_relation, let_frequency)


@register
class ResponseLanguage(ConstraintType):
    type_id = "language:response_language"
    params = {"language": tuple(LANGUAGE_NAMES)}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"language": rng.choice([code for code in LANGUAGE_NAMES if code != "en"])}

    @classmethod
    def describe(cls, language):
        return f"Write your whole reply in {LANGUAGE_NAMES[language]}; no other language may be used."

    @classmethod
    def check(cls, response, prompt, language):
        detected = detect_language(response)
        return detected is None or detected == language  # undecidable counts as followed (IFEval)


@register
class NumberPlaceholders(ConstraintType):
    type_id = "detectable_content:number_placeholders"
    params = {"num_placeholders": int}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"num_placeholders": rng.randint(1, 4)}

    @classmethod
    def describe(cls, num_placeholders):
        return f"Include at least {plural(num_placeholders, 'placeholder')} in square brackets, like [name] or [date]."

    @classmethod
    def check(cls, response, prompt, num_placeholders):
        return len(re.findall(r"\[[^\[\]\n]+\]", response)) >= num_placeholders


@register
class Postscript(ConstraintType):
    type_id = "detectable_content:postscript"
    params = {"postscript_marker": ("P.S.", "P.P.S")}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"postscript_marker": rng.choice(["P.S.", "P.P.S"])}

    @classmethod
    def describe(cls, postscript_marker):
        return f"End your reply with a postscript that begins with {postscript_marker}"

    @classmethod
    def check(cls, response, prompt, postscript_marker):
        # A line that opens with the marker (spaces between letters and markdown emphasis tolerated).
        body = r"p\.\s?p\.\s?s" if postscript_marker == "P.P.S" else r"p\.\s?s\."
        return re.search(rf"^[\s*_]*{body}", response, flags=re.IGNORECASE | re.MULTILINE) is not None


@register
class NoComma(ConstraintType):
    type_id = "punctuation:no_comma"

    @classmethod
    def describe(cls):
        return "Do not use a single comma anywhere in your reply."

    @classmethod
    def check(cls, response, prompt):
        return "," not in response and "，" not in response


def _english_or_unknown(text: str) -> bool:
    return detect_language(text) in ("en", None)


@register
class CapitalWordFrequency(ConstraintType):
    type_id = "change_case:capital_word_frequency"
    params = {"capital_frequency": int, "capital_relation": RELATIONS}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"capital_frequency": rng.randint(1, 20), "capital_relation": rng.choice(RELATIONS)}

    @classmethod
    def describe(cls, capital_frequency, capital_relation):
        return (f"Words written entirely in capital letters should appear "
                f"{_relation_phrase(capital_relation, capital_frequency)} in your reply.")

    @classmethod
    def check(cls, response, prompt, capital_frequency, capital_relation):
        # Hyphenated and apostrophe words count once, as IFEval's tokenizer does; "I" counts too.
        tokens = re.findall(r"[^\W_]+(?:[-'][^\W_]+)*", response)
        return _compare(sum(t.isupper() for t in tokens), capital_relation, capital_frequency)


@register
class EnglishCapital(ConstraintType):
    type_id = "change_case:english_capital"

    @classmethod
    def describe(cls):
        return "Reply in English only, using nothing but CAPITAL LETTERS."

    @classmethod
    def check(cls, response, prompt):
        return response.isupper() and _english_or_unknown(response)


@register
class EnglishLowercase(ConstraintType):
    type_id = "change_case:english_lowercase"

    @classmethod
    def describe(cls):
        return "Reply in English only, in lowercase letters throughout; capital letters are not allowed."

    @classmethod
    def check(cls, response, prompt):
        return response.islower() and _english_or_unknown(response)


ENDING_PHRASES = (
    "Is there anything else I can help with?",
    "Any other questions?",
    "Let me know if you have any other questions.",
    "I hope this helps.",
    "That is all for now.",
    "Thank you for reading.",
)


@register
class EndChecker(ConstraintType):
    type_id = "startend:end_checker"
    params = {"end_phrase": str}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"end_phrase": rng.choice(ENDING_PHRASES)}

    @classmethod
    def describe(cls, end_phrase):
        return f'Close your reply with exactly the phrase "{end_phrase}", with nothing after it.'

    @classmethod
    def check(cls, response, prompt, end_phrase):
        return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


@register
class Quotation(ConstraintType):
    type_id = "startend:quotation"

    @classmethod
    def describe(cls):
        return "Put your entire reply inside double quotation marks."

    @classmethod
    def check(cls, response, prompt):
        text = response.strip()
        return len(text) > 1 and (text[0], text[-1]) in {('"', '"'), ("“", "”")}

