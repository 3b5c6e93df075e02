"""The words of tickets as the search index keeps and finds them: normalised, split into words,
and cut into the prefixes that a search by a word's first letters finds. Plain Python and no
keys: the index hashes what this gives (``services.tickets.search_index``), so it is the one
place that says what counts as the same word, for what is indexed and what is searched alike.

- Normalised: Unicode NFKC, then case-folded (``Straße`` and ``STRASSE`` are one word, so are
  ``ﬁle`` and ``file``), then NFKC again (folding can undo it).
- Split on everything that is not a letter, a digit or a combining mark: punctuation, symbols,
  spaces, the underscore. A word keeps its marks (``हिन्दी`` is one word, not four pieces).
- A word of fewer than ``MIN_LETTERS`` is not indexed, and a query of only such words is refused:
  a two-letter prefix would match a great part of every text.
- A word is kept as its prefixes of ``MIN_LETTERS`` up to ``PREFIX_CAP`` letters, the whole word
  among them when it is no longer: so "ref" finds "refund". A word longer than the cap is kept,
  and searched for, as its first ``PREFIX_CAP`` letters (words that differ only after them are
  found together). Raising the cap trades rows of the index for that precision.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator

MIN_LETTERS = 3
PREFIX_CAP = 16
# Terms (prefixes) kept of one text, the first in its order: a 100,000-character body of
# distinct long words would otherwise add some 90,000 rows to the index.
MAX_TERMS_PER_TEXT = 10_000
# A query: its length as typed, and the words of MIN_LETTERS or more it may hold.
MAX_QUERY_CHARS = 200
MAX_QUERY_WORDS = 8

# The planes that hold combining marks (the basic and supplementary multilingual, and the
# variation selectors in plane 14); a unit test holds this against every code point.
MARK_PLANES = ((0x0000, 0x1FFFF), (0xE0000, 0xE0FFF))


def mark_ranges() -> list[tuple[int, int]]:
    """The code point ranges of combining marks (general category M*) in ``MARK_PLANES``."""
    ranges: list[tuple[int, int]] = []
    for low, high in MARK_PLANES:
        start = None
        for code in range(low, high + 2):
            mark = code <= high and unicodedata.category(chr(code)).startswith("M")
            if mark and start is None:
                start = code
            elif not mark and start is not None:
                ranges.append((start, code - 1))
                start = None
    return ranges


@functools.cache
def _word() -> re.Pattern[str]:
    """A word: letters, digits and combining marks. Python's ``\\w`` takes no combining mark
    (a vowel sign of Devanagari, say, would split its word), so they are added; built on first
    use, since scanning the planes takes a moment."""
    marks = "".join(
        re.escape(chr(low)) + (f"-{re.escape(chr(high))}" if high > low else "")
        for low, high in mark_ranges()
    )
    return re.compile(rf"(?:[^\W_]|[{marks}])+")


def normalise(text: str) -> str:
    """NFKC, case-folded, NFKC: the form in which two spellings of a word are one."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def words(text: str) -> Iterator[str]:
    """Every word of ``text``, normalised, in order (repeats and short words included)."""
    for match in _word().finditer(normalise(text)):
        yield match.group()


def index_terms(text: str) -> list[str]:
    """What the index keeps of ``text``: each prefix of ``MIN_LETTERS`` up to ``PREFIX_CAP``
    letters of each of its words, once, in the order they first come, at most
    ``MAX_TERMS_PER_TEXT`` of them."""
    terms: dict[str, None] = {}
    for word in words(text):
        if len(word) < MIN_LETTERS:
            continue
        for end in range(MIN_LETTERS, min(len(word), PREFIX_CAP) + 1):
            terms[word[:end]] = None
            if len(terms) >= MAX_TERMS_PER_TEXT:
                return list(terms)
    return list(terms)


def query_terms(query: str) -> list[str]:
    """What a search looks for: each word of ``MIN_LETTERS`` or more of ``query``, cut to
    ``PREFIX_CAP`` letters, once, in order. Each finds the words it is a prefix of."""
    terms: dict[str, None] = {}
    for word in words(query):
        if len(word) >= MIN_LETTERS:
            terms[word[:PREFIX_CAP]] = None
    return list(terms)


def query_refusal(query: str) -> str | None:
    """Why ``query`` cannot be searched, or None. Never quotes the query: the reason goes into
    an answer, and an answer's text may reach a span (``exception.message``)."""
    if not query.strip():
        return "must not be empty"
    if len(query) > MAX_QUERY_CHARS:
        return f"at most {MAX_QUERY_CHARS} characters"
    found = list(words(query))
    if not found:
        return (
            "holds no word: operators and wildcards are not search syntax (every word is"
            f" matched by its first letters, {MIN_LETTERS} or more)"
        )
    terms = query_terms(query)
    if not terms:
        return f"needs a word of at least {MIN_LETTERS} letters: shorter words are not indexed"
    if len(terms) > MAX_QUERY_WORDS:
        return f"at most {MAX_QUERY_WORDS} different words of {MIN_LETTERS} letters or more"
    return None
