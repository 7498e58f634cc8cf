"""Polite filler in simulated user turns ("Thanks, that was helpful!") teaches nothing and makes
every dialogue sound alike; the recipe removes it. Only whole sentences of thanks or praise at the
start or end of a turn go, and a short thanks clause before the real request ("Thanks! Now ...")."""
from __future__ import annotations

import re

_PRAISE = (r"(?:very |really |so |super |extremely |incredibly )?(?:helpful|great|useful|clear|interesting|"
           r"informative|insightful|fascinating|amazing|awesome|perfect|good|excellent|detailed|thorough)")
_THANKS = r"(?:thanks|thank you|thx|many thanks|much appreciated|cheers)(?: (?:so|very) much| a lot| again)?"
_ACK = r"(?:great|awesome|perfect|wonderful|excellent|fantastic|brilliant|nice|cool|wow|ok|okay|got it|i see|" \
       r"(?:that |it )?makes sense|understood|interesting|good to know)"
_PHRASE = (
    rf"(?:{_THANKS}|{_ACK}|i (?:really )?appreciate (?:it|that|this|your help|the help|your (?:\w+ )?(?:answer|"
    rf"explanation|response|reply|advice))|"
    rf"(?:that|this|it)(?:'s| is| was) (?:a )?{_PRAISE}(?: (?:answer|explanation|response|reply|overview|advice|"
    rf"information|info|breakdown|summary))?|"
    rf"(?:what a |such a )?{_PRAISE} (?:answer|explanation|response|reply|overview|advice|information|info|point|"
    rf"points|question|tips|suggestions|breakdown|summary))"
    rf"(?: for (?:the|your|this|that|all|explaining|sharing|clarifying|helping)[^.!?,]{{0,60}})?"
)
# One or more filler phrases ("Thank you so much, that was really helpful!").
_FILLER_SENTENCE = re.compile(rf"^{_PHRASE}(?:(?:\s*[,;:-]\s*|\s+)(?:and\s+)?{_PHRASE})*[\s,.!:)(;-]*$", re.IGNORECASE)
_LEADING_CLAUSE = re.compile(rf"^(?:{_THANKS}|{_ACK})(?: for [^,.!?]{{0,60}})?[,!.]\s+(?:(?:but|and|so|now)\s+)?",
                             re.IGNORECASE)
_SENTENCES = re.compile(r"(?<=[.!?])\s+")


def _is_filler(sentence: str) -> bool:
    sentence = sentence.strip()
    if not re.search(r"\w", sentence):  # emoji or punctuation alone
        return True
    emoji_free = re.sub(r"[^\w\s',.!:;()-]", "", sentence).strip()
    return not sentence.endswith("?") and len(emoji_free.split()) <= 14 \
        and _FILLER_SENTENCE.match(emoji_free) is not None


def strip_polite_filler(text: str) -> str:
    """The turn without its leading and trailing thanks and praise; "" when that is all it was."""
    sentences = [s for s in _SENTENCES.split(text.strip()) if s.strip()]
    while sentences and _is_filler(sentences[0]):
        sentences.pop(0)
    while sentences and _is_filler(sentences[-1]):
        sentences.pop()
    if not sentences:
        return ""
    result = " ".join(sentences) if "\n" not in text else _rejoin(text, sentences)
    stripped = _LEADING_CLAUSE.sub("", result, count=1).strip()
    if stripped == result:
        return result
    if stripped:
        stripped = stripped[0].upper() + stripped[1:]
    return strip_polite_filler(stripped)  # "Thanks, great answer! Now ..." has more than one layer


def _rejoin(text: str, sentences: list[str]) -> str:
    """Keep the original spacing (paragraphs, lists) between the first and last kept sentence."""
    start = text.find(sentences[0])
    end = text.rfind(sentences[-1]) + len(sentences[-1])
    return text[start:end] if 0 <= start < end else " ".join(sentences)
