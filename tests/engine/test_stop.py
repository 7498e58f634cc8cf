from hypothesis import given, strategies as st

from nemotron.engine.stop import StopStringMatcher


def run(pieces, stops):
    matcher = StopStringMatcher(stops)
    shown = []
    for piece in pieces:
        text, matched = matcher.feed(piece)
        shown.append(text)
        if matched:
            return "".join(shown), matched
    return "".join(shown) + matcher.flush(), None


def test_stop_string_spanning_tokens_is_found_and_never_shown():
    matcher = StopStringMatcher(["<extra_id_1>"])
    assert matcher.feed("Hello <ex") == ("Hello ", None)
    assert matcher.feed("tra_id") == ("", None)
    assert matcher.feed("_1>User") == ("", "<extra_id_1>")


def test_held_text_is_released_when_it_cannot_be_a_stop():
    matcher = StopStringMatcher(["\n\n"])
    assert matcher.feed("a\n") == ("a", None)
    assert matcher.feed("b") == ("\nb", None)
    assert matcher.flush() == ""


def test_earliest_of_several_stops_wins():
    assert run(["xx STOP yy END"], ["END", "STOP"]) == ("xx ", "STOP")


@given(st.text(alphabet="ab<>_", max_size=40), st.lists(st.integers(1, 5), max_size=20),
       st.sampled_from(["ab", "<_>", "aab", "b>"]))
def test_streaming_equals_matching_the_whole_text(text, cuts, stop):
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(text[start:start + cut])
        start += cut
    pieces.append(text[start:])
    shown, matched = run(pieces, [stop])
    index = text.find(stop)
    if index == -1:
        assert (shown, matched) == (text, None)
    else:
        assert (shown, matched) == (text[:index], stop)


@given(st.text(alphabet="ab<>_", max_size=40), st.lists(st.integers(0, 5), max_size=20),
       st.integers(0, 20), st.sampled_from(["ab", "<_>", "aab", "b>"]))
def test_no_match_ends_in_text_fed_with_matching_off(text, cuts, locked_pieces, stop):
    """A request's first min_tokens tokens (vLLM): a stop string may start in their text, never end
    there; the first occurrence that ends later is the match."""
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(text[start:start + cut])
        start += cut
    pieces.append(text[start:])
    locked = len("".join(pieces[:locked_pieces]))
    matcher, shown, matched = StopStringMatcher([stop]), [], None
    for k, piece in enumerate(pieces):
        out, matched = matcher.feed(piece, match=k >= locked_pieces)
        shown.append(out)
        if matched:
            break
    if not matched:
        shown.append(matcher.flush())
    index = text.find(stop, max(0, locked - len(stop) + 1))
    if index == -1:
        assert ("".join(shown), matched) == (text, None)
    else:
        assert ("".join(shown), matched) == (text[:index], stop)
