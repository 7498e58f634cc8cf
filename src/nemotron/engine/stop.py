"""Stop strings matched on generated text, also when one spans several tokens.

Streaming must never show text that a stop string later claims, so the matcher holds back any tail
of the text that could still grow into a stop string and releases it once it cannot.
"""
from __future__ import annotations


class StopStringMatcher:
    def __init__(self, stop_strings: list[str] | tuple[str, ...]) -> None:
        self.stop_strings = tuple(s for s in stop_strings if s)
        self._pending = ""

    def feed(self, new_text: str) -> tuple[str, str | None]:
        """Add newly decoded text. Returns (text that is safe to emit now, the stop string matched or None).

        On a match the emitted text ends just before the stop string; text after it is dropped.
        """
        self._pending += new_text
        match_at, matched = len(self._pending) + 1, None
        for stop in self.stop_strings:
            index = self._pending.find(stop)
            if index != -1 and index < match_at:
                match_at, matched = index, stop
        if matched is not None:
            emitted, self._pending = self._pending[:match_at], ""
            return emitted, matched
        hold = self._longest_partial_suffix()
        cut = len(self._pending) - hold
        emitted, self._pending = self._pending[:cut], self._pending[cut:]
        return emitted, None

    def flush(self) -> str:
        """The held-back tail, when generation ends for another reason."""
        emitted, self._pending = self._pending, ""
        return emitted

    def _longest_partial_suffix(self) -> int:
        best = 0
        for stop in self.stop_strings:
            for length in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:length]):
                    best = length
                    break
        return best
