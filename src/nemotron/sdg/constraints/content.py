"""Constraints on what the response says: keywords, language, case, punctuation, placeholders,
postscripts, and how it starts or ends. Checks follow IFEval's reference code (lm-eval's `ifeval`
task); where that code is plainly wrong, the check here is stricter, never more lenient."""
from __future__ import annotations

import random
import re

from nemotron.sdg.constraints.base import AT_LEAST, LESS_THAN, RELATIONS, ConstraintType, plural, register
from nemotron.sdg.constraints.language import LANGUAGE_NAMES, detect_language
from nemotron.sdg.constraints.text import word_tokens
from nemotron.sdg.constraints.words import KEYWORDS, prompt_keywords


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _how_often(relation: str, n: int) -> str:
    """"at least once", "at least 3 times", "fewer than 3 times"; never "fewer than once" (callers
    phrase "less than 1" as a ban)."""
    if relation == LESS_THAN and n == 1:
        raise ValueError("'fewer than once' is phrased as a ban by the caller")
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


# Keywords are words (or short phrases) with no regex syntax: IFEval passes them to `re` unescaped.
_KEYWORD = re.compile(r"\w+(?:[ '-]\w+)*")


def _check_keywords(type_id: str, keywords: list[str]) -> None:
    bad = [k for k in keywords if not _KEYWORD.fullmatch(k)]
    if bad:
        raise ValueError(f"{type_id}: keywords must be words (letters, digits, ' and -), got {bad}")


def _count_keyword(text: str, keyword: str) -> int:
    # IFEval counts case-insensitive matches anywhere, so "art" inside "start" counts.
    return len(re.findall(re.escape(keyword), text, flags=re.IGNORECASE))


@register
class KeywordsExistence(ConstraintType):
    type_id = "keywords:existence"
    params = {"keywords": list}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"keywords": _draw_keywords(rng, prompt, 2)}

    @classmethod
    def validate(cls, kwargs):
        super().validate(kwargs)
        _check_keywords(cls.type_id, kwargs["keywords"])

    @classmethod
    def describe(cls, keywords):
        return f"Be sure to use the words {_quoted_list(keywords)} somewhere in your reply."

    @classmethod
    def check(cls, response, prompt, keywords):
        return all(_count_keyword(response, k) > 0 for k in keywords)


@register
class KeywordsFrequency(ConstraintType):
    type_id = "keywords:frequency"
    params = {"keyword": str, "frequency": int, "relation": RELATIONS}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        relation = rng.choice(RELATIONS)
        # "less than 1" forbids the word; forbidden_words covers that.
        frequency = rng.randint(2, 3) if relation == LESS_THAN else rng.randint(1, 3)
        return {"keyword": _draw_keywords(rng, prompt, 1)[0], "frequency": frequency, "relation": relation}

    @classmethod
    def validate(cls, kwargs):
        super().validate(kwargs)
        _check_keywords(cls.type_id, [kwargs["keyword"]])

    @classmethod
    def describe(cls, keyword, frequency, relation):
        if relation == AT_LEAST:
            return f'The word "{keyword}" should appear {_how_often(relation, frequency)} in your reply.'
        # The count includes "keyword" inside longer words: say so when it is an upper bound.
        if frequency == 1:
            return f'Do not write "{keyword}" anywhere in your reply, not even inside a longer word.'
        return (f'The word "{keyword}" should appear {_how_often(relation, frequency)} in your reply, '
                "counting it inside longer words too.")

    @classmethod
    def check(cls, response, prompt, keyword, frequency, relation):
        return _compare(_count_keyword(response, keyword), relation, frequency)


@register
class KeywordsForbidden(ConstraintType):
    type_id = "keywords:forbidden_words"
    params = {"forbidden_words": list}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        return {"forbidden_words": _draw_keywords(rng, prompt, 2)}

    @classmethod
    def validate(cls, kwargs):
        super().validate(kwargs)
        _check_keywords(cls.type_id, kwargs["forbidden_words"])

    @classmethod
    def describe(cls, forbidden_words):
        return f"Do not use the words {_quoted_list(forbidden_words)} anywhere in your reply."

    @classmethod
    def check(cls, response, prompt, forbidden_words):
        # Whole words here, as IFEval's r"\b" + word + r"\b".
        return not any(re.search(rf"\b{re.escape(w)}\b", response, flags=re.IGNORECASE) for w in forbidden_words)


@register
class KeywordsLetterFrequency(ConstraintType):
    type_id = "keywords:letter_frequency"
    params = {"letter": tuple("abcdefghijklmnopqrstuvwxyz"), "let_frequency": int, "let_relation": RELATIONS}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        relation = rng.choice(RELATIONS)
        low = 2 if relation == LESS_THAN else 1
        return {"letter": rng.choice("abcdefghijklmnopqrstuvwxyz"), "let_frequency": rng.randint(low, 10),
                "let_relation": relation}

    @classmethod
    def describe(cls, letter, let_frequency, let_relation):
        if let_relation == LESS_THAN and let_frequency == 1:
            return f'Do not use the letter "{letter}" (upper or lower case) anywhere in your reply.'
        return (f'The letter "{letter}" (upper or lower case) should appear '
                f"{_how_often(let_relation, let_frequency)} in your reply.")

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
        # IFEval counts a text langdetect cannot read (no letters) as followed; that is no reply in
        # any language, so it fails here.
        return detect_language(response) == language


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
        return len(re.findall(r"\[.*?\]", response)) >= num_placeholders  # IFEval's: "[]" counts too


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
        # IFEval's: the marker anywhere in the lowercased text, spaces between its letters allowed.
        body = r"p\.\s?p\.\s?s" if postscript_marker == "P.P.S" else r"p\.\s?s\."
        return re.search(body, response.lower()) is not None


@register
class NoComma(ConstraintType):
    type_id = "punctuation:no_comma"

    @classmethod
    def describe(cls):
        return "Do not use a single comma anywhere in your reply."

    @classmethod
    def check(cls, response, prompt):
        return "," not in response


def _capital_words(text: str, at_least: bool) -> int:
    """IFEval's count: NLTK word tokens that are all upper case, so the pronoun "I" counts. For an
    upper bound that is kept; toward a lower bound "I" is not a capital word."""
    return sum(t.isupper() and not (at_least and t == "I") for t in word_tokens(text))


@register
class CapitalWordFrequency(ConstraintType):
    type_id = "change_case:capital_word_frequency"
    params = {"capital_frequency": int, "capital_relation": RELATIONS}

    @classmethod
    def sample_kwargs(cls, rng, prompt):
        relation = rng.choice(RELATIONS)
        low = 2 if relation == LESS_THAN else 1
        return {"capital_frequency": rng.randint(low, 20), "capital_relation": relation}

    @classmethod
    def describe(cls, capital_frequency, capital_relation):
        if capital_relation == AT_LEAST:
            return (f"Write at least {plural(capital_frequency, 'word')} entirely in capital letters, like "
                    '"NOTE"; the pronoun "I" does not count.')
        if capital_frequency == 1:
            return ('Do not write any word entirely in capital letters; that includes the pronoun "I" and '
                    'a capital "A".')
        return (f"Write fewer than {capital_frequency} words entirely in capital letters; the pronoun \"I\" "
                'and a capital "A" count too.')

    @classmethod
    def check(cls, response, prompt, capital_frequency, capital_relation):
        count = _capital_words(response, at_least=capital_relation == AT_LEAST)
        return _compare(count, capital_relation, capital_frequency)


@register
class EnglishCapital(ConstraintType):
    type_id = "change_case:english_capital"

    @classmethod
    def describe(cls):
        return "Reply in English only, using nothing but CAPITAL LETTERS."

    @classmethod
    def check(cls, response, prompt):
        # IFEval passes a text langdetect cannot read; here it must read as English.
        return response.isupper() and detect_language(response) == "en"


@register
class EnglishLowercase(ConstraintType):
    type_id = "change_case:english_lowercase"

    @classmethod
    def describe(cls):
        return "Reply in English only, in lowercase letters throughout; capital letters are not allowed."

    @classmethod
    def check(cls, response, prompt):
        return response.islower() and detect_language(response) == "en"


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
        return len(text) > 1 and text[0] == '"' and text[-1] == '"'  # straight quotes only, as IFEval

