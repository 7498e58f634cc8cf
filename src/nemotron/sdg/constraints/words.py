"""Word lists for drawing keywords: concrete, common English words a response on almost any topic
could use or avoid without contortion."""
from __future__ import annotations

import re

KEYWORDS = (
    "balance", "bridge", "budget", "career", "change", "choice", "circle", "climate", "comfort",
    "community", "compass", "courage", "culture", "curious", "design", "detail", "energy", "engine",
    "evidence", "example", "experience", "family", "feature", "festival", "focus", "forest", "freedom",
    "future", "garden", "goal", "growth", "habit", "harbor", "harmony", "health", "history", "honest",
    "horizon", "idea", "impact", "island", "journey", "justice", "kitchen", "knowledge", "language",
    "lantern", "leader", "letter", "library", "light", "machine", "market", "memory", "method",
    "mirror", "moment", "morning", "mountain", "music", "nature", "network", "ocean", "office",
    "option", "orange", "pattern", "people", "planet", "pocket", "position", "practice", "pressure",
    "process", "promise", "purpose", "puzzle", "quality", "question", "rhythm", "river", "routine",
    "safety", "science", "season", "shadow", "signal", "simple", "silver", "skill", "solution",
    "spirit", "station", "story", "strategy", "strength", "student", "summer", "system", "teacher",
    "theory", "thunder", "timber", "tradition", "travel", "treasure", "trust", "valley", "value",
    "village", "vision", "voice", "weather", "window", "winter", "wisdom", "wonder", "yellow",
)

# English function words: never drawn from a prompt as keywords.
ENGLISH_STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each either few for from further
had has have having he her here hers herself him himself his how i if in into is it its itself just
like make many me might more most much must my myself no nor not now of off on once only or other
our ours ourselves out over own please same shall she should so some such than that the their
theirs them themselves then there these they this those through to too under until up upon very
was we well were what when where which while who whom why will with within without would you your
yours yourself yourselves write writing explain describe give provide list discuss include create
tell using used use based answer response question words word sentence paragraph following
essay article poem story short brief detailed detail text topic topics things thing something
""".split())


def prompt_keywords(prompt: str) -> list[str]:
    """Content words of a prompt (lowercase, 4+ letters, no function words), first occurrence order."""
    seen: dict[str, None] = {}
    for w in re.findall(r"[A-Za-z]{4,}", prompt):
        w = w.lower()
        if w not in ENGLISH_STOPWORDS:
            seen.setdefault(w, None)
    return list(seen)
