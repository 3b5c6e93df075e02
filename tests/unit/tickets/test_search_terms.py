"""The tokeniser of the search index, in plain Python: what counts as the same word, what is
kept of a text, what a query looks for, and which queries are refused and why."""

from __future__ import annotations

import hashlib
import sys
import unicodedata

import pytest

from kernel.commands import load_command
from kernel.errors import ValidationFailed
from services.tickets import terms
from services.tickets.commands import SearchTicketsV1


def test_words_are_normalised_nfkc_and_caseless():
    assert list(terms.words("Straße STRASSE strasse")) == ["strasse"] * 3
    # Compatibility forms (a ligature, full-width letters) are the plain word.
    assert list(terms.words("ﬁle ＦＩＬＥ")) == ["file", "file"]
    # A composed and a decomposed accent are one spelling.
    assert list(terms.words("caf\u00e9 cafe\u0301")) == ["café", "café"]


def test_words_split_on_punctuation_symbols_spaces_and_underscores():
    text = "refund-request: order_id=ORD/2024.0042, (e-mail) a+b*c!"
    assert list(terms.words(text)) == [
        "refund",
        "request",
        "order",
        "id",
        "ord",
        "2024",
        "0042",
        "e",
        "mail",
        "a",
        "b",
        "c",
    ]


def test_a_word_keeps_its_combining_marks():
    # Python's \w takes no combining mark: the vowel signs would cut each word in pieces.
    assert list(terms.words("हिन्दी भाषा")) == ["हिन्दी", "भाषा"]


def test_the_planes_scanned_for_marks_hold_every_mark():
    covered = {code for low, high in terms.mark_ranges() for code in range(low, high + 1)}
    marks = {
        code
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)).startswith("M")
    }
    assert marks == covered


def test_a_word_is_kept_as_its_prefixes_of_three_letters_and_more():
    assert terms.index_terms("Refund") == ["ref", "refu", "refun", "refund"]
    # Short words are not kept; repeats are kept once, in the order they first come.
    assert terms.index_terms("an ox and AND refund; and") == [
        "and",
        "ref",
        "refu",
        "refun",
        "refund",
    ]


def test_a_long_word_is_kept_to_the_cap():
    word = "internationalization"
    kept = terms.index_terms(word)
    assert kept == [word[:end] for end in range(3, terms.PREFIX_CAP + 1)]
    assert word not in kept
    # ...and a query for it looks for what was kept: its first PREFIX_CAP letters.
    assert terms.query_terms(word.upper()) == [word[: terms.PREFIX_CAP]]


def test_what_is_kept_of_one_text_is_capped():
    words = [hashlib.sha256(str(n).encode()).hexdigest()[:14] for n in range(5000)]
    kept = terms.index_terms(" ".join(words))  # up to 12 prefixes of each of 5,000 words
    assert len(kept) == terms.MAX_TERMS_PER_TEXT
    # The first words of the text are those kept.
    assert kept[:12] == [words[0][:end] for end in range(3, 15)]
    assert set(terms.index_terms(" ".join(words[:100]))) <= set(kept)


def test_a_query_looks_for_its_words_of_three_letters_or_more_once():
    assert terms.query_terms("Refund the ORDER, refund it") == ["refund", "the", "order"]
    # A term finds the words it is a prefix of: what the index keeps of them.
    kept = set(terms.index_terms("Refunded orders"))
    assert set(terms.query_terms("refund ord")) <= kept
    assert not set(terms.query_terms("fund")) & kept


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("*", "holds no word"),
        ('"" * ? %_% | & - ~ ^ () [] :', "holds no word"),
        ("ab cd e", "needs a word of at least 3 letters"),
        ("x" * (terms.MAX_QUERY_CHARS + 1), f"at most {terms.MAX_QUERY_CHARS} characters"),
        (
            " ".join(f"word{n}" for n in range(terms.MAX_QUERY_WORDS + 1)),
            f"at most {terms.MAX_QUERY_WORDS} different words",
        ),
    ],
)
def test_a_query_that_cannot_be_searched_is_refused_naming_q(query, reason):
    assert reason in (terms.query_refusal(query) or "")
    with pytest.raises(ValidationFailed) as refused:
        load_command(SearchTicketsV1, {"q": query})
    [message] = refused.value.errors["q"]
    assert reason in message
    if query.strip():
        assert query.strip() not in message  # a refusal never quotes the query


def test_a_query_of_searchable_words_loads():
    assert terms.query_refusal("refund ab") is None
    assert load_command(SearchTicketsV1, {"q": "refund", "status": "open"}) == {
        "q": "refund",
        "status": "open",
    }
    # As many words as allowed, repeats and short words not counted.
    allowed = " ".join(f"word{n}" for n in range(terms.MAX_QUERY_WORDS)) + " word0 ab"
    assert terms.query_refusal(allowed) is None


def test_a_search_refuses_a_missing_query_an_unknown_status_and_a_card_number():
    for query, field in (
        ({}, "q"),
        ({"q": "refund", "status": "lost"}, "status"),
        ({"q": "refund", "sort": "x"}, "sort"),
        ({"q": "card 4111 1111 1111 1111"}, "q"),
    ):
        with pytest.raises(ValidationFailed) as refused:
            load_command(SearchTicketsV1, query)
        assert set(refused.value.errors) == {field}, query
        assert "4111" not in str(refused.value.errors)
