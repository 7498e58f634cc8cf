"""Offline response-language detection for `language:response_language` and the English case checks.

Two steps: the dominant Unicode script decides non-Latin languages outright; Latin-script text is
scored by hits against short lists of very frequent function words per language.

Limits (deliberate — no model, no download):
- One language per script outside Latin: Cyrillic is reported as Russian (Ukrainian, Bulgarian,
  Serbian too), Arabic script as Arabic (Persian, Urdu too), Devanagari as Hindi (Marathi, Nepali
  too). Han without kana is Chinese (Japanese text with no kana at all is misread as Chinese).
- Latin script: only en, fr, de, es, it, pt. Other Latin languages (Dutch, Polish, Turkish, ...)
  come back as the closest of these or as None. Texts with no function words at all (a bare list of
  names, a single word) come back as None: callers treat None as "cannot tell", as IFEval does when
  langdetect fails.
- Mixed-language text is labelled by whichever script / word list dominates.
"""
from __future__ import annotations

import re
from collections import Counter

LANGUAGE_NAMES = {
    "en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian",
    "pt": "Portuguese", "ru": "Russian", "zh": "Chinese", "ja": "Japanese", "ko": "Korean",
    "ar": "Arabic", "hi": "Hindi",
}

_FUNCTION_WORDS = {
    "en": "the and is are of to in that it with for was this be have not you they on as by from at "
          "which will can would there their what an or has but been were we he she",
    "fr": "le la les des est et un une du en que qui dans pour pas sur au aux ce cette sont avec il "
          "elle nous vous ils mais ou plus être avoir été leur son sa ses je ne très",
    "de": "der die das und ist nicht ein eine zu den von mit sich des auf für im dem auch es werden "
          "als sind wird bei einer um noch wie einem über einen zum kann nur oder aber ich wir sie",
    "es": "el la los las de que y en un una es por con para del se no su al lo como más pero sus le "
          "ya este esta son también fue muy hay está entre cuando sin sobre ser tiene",
    "it": "il lo la gli le di che e è un una per non con del della dei delle nel nella sono anche "
          "come più ma questo questa al alla da si ha essere tra molto loro se ci hanno",
    "pt": "o a os as de que e do da dos das em um uma para com não no na por mais se como mas foi ao "
          "ele ela são também seu sua ou quando muito já está isso tem pelo pela você",
}
_FUNCTION_WORDS_SETS = {lang: frozenset(ws.split()) for lang, ws in _FUNCTION_WORDS.items()}
# Letters that only some of the Latin languages use: they break ties between close word scores.
_MARK_LETTERS = {"es": "ñ¿¡", "pt": "ãõ", "de": "ßäöü", "fr": "œêèâîûù"}

_SCRIPT_RANGES = (
    ("latin", ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x24F))),
    ("cyrillic", ((0x400, 0x4FF),)),
    ("arabic", ((0x600, 0x6FF), (0x750, 0x77F), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF))),
    ("devanagari", ((0x900, 0x97F),)),
    ("hangul", ((0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3130, 0x318F))),
    ("kana", ((0x3040, 0x30FF), (0x31F0, 0x31FF))),
    ("han", ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF))),
)
_SCRIPT_LANGUAGE = {"cyrillic": "ru", "arabic": "ar", "devanagari": "hi", "hangul": "ko"}


def _script(ch: str) -> str | None:
    code = ord(ch)
    for name, ranges in _SCRIPT_RANGES:
        if any(lo <= code <= hi for lo, hi in ranges):
            return name
    return None


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text's language among `LANGUAGE_NAMES`, or None when it cannot tell."""
    scripts = Counter(s for s in map(_script, text) if s is not None)
    if sum(scripts.values()) < 3:
        return None
    cjk = scripts["han"] + scripts["kana"]
    groups = {"latin": scripts["latin"], "cjk": cjk, **{s: scripts[s] for s in _SCRIPT_LANGUAGE}}
    top = max(groups, key=groups.__getitem__)
    if top == "cjk":
        # Japanese prose is typically a third or more kana; Chinese has none.
        return "ja" if scripts["kana"] >= 0.1 * cjk else "zh"
    if top != "latin":
        return _SCRIPT_LANGUAGE[top]
    return _detect_latin(text.lower())


def _detect_latin(text: str) -> str | None:
    tokens = re.findall(r"[^\W\d_]+", text)
    scores = {lang: sum(t in ws for t in tokens) for lang, ws in _FUNCTION_WORDS_SETS.items()}
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    (best, best_score), (_, second_score) = ranked[0], ranked[1]
    if best_score == 0:
        return None
    if best_score > second_score:
        return best
    tied = [lang for lang, s in scores.items() if s == best_score]
    marked = [lang for lang in tied if any(ch in text for ch in _MARK_LETTERS.get(lang, ""))]
    return marked[0] if len(marked) == 1 else None
