"""Stop strings matched on generated text, also when one spans several tokens.

Streaming must never show text that a stop string later claims, so the matcher holds back any tail
of the text that could still grow into a stop string and releases it once it cannot. Text fed while
matching is off (a request's first min_tokens tokens, as vLLM) can hold no match that ends in it; a
stop string that starts there and ends in later text still matches.
"""
from __future__ import annotations


class StopStringMatcher:
    def __init__(self, stop_strings: list[str] | tuple[str, ...]) -> None:
        self.stop_strings = tuple(s for s in stop_strings if s)
        self._pending = ""
        self._locked = 0  # no match may end within the first this many characters of _pending

    def feed(self, new_text: str, match: bool = True) -> tuple[str, str | None]:
        """Add newly decoded text. Returns (text that is safe to emit now, the stop string matched or None).

        On a match the emitted text ends just before the stop string; text after it is dropped.
        With `match` off, no stop string may end in this text (one may still start in it).
        """
        self._pending += new_text
        if not match:
            self._locked = len(self._pending)
        match_at, matched = len(self._pending) + 1, None
        for stop in self.stop_strings if match else ():
            index = self._pending.find(stop, max(0, self._locked - len(stop) + 1))
            if index != -1 and index < match_at:
                match_at, matched = index, stop
        if matched is not None:
            emitted, self._pending, self._locked = self._pending[:match_at], "", 0
            return emitted, matched
        hold = self._longest_partial_suffix()
        cut = len(self._pending) - hold
        emitted, self._pending = self._pending[:cut], self._pending[cut:]
        self._locked = max(0, self._locked - cut)
        return emitted, None

    def flush(self) -> str:
        """The held-back tail, when generation ends for another reason."""
        emitted, self._pending, self._locked = self._pending, "", 0
        return emitted

    def _longest_partial_suffix(self) -> int:
        best = 0
        for stop in self.stop_strings:
            for length in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:length]):
                    best = length
                    break
        return best
