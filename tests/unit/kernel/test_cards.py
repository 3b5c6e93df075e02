"""Unit tests for kernel.cards: which sequences count as card numbers, and redacting them."""

from __future__ import annotations

import pytest

from kernel.cards import (
    CardMatch,
    contains_card_number,
    find_card_numbers,
    luhn_valid,
    redact_card_numbers,
)

# Published test numbers of the card networks: Luhn-valid, never charged.
TEST_CARDS = {
    "visa": "4111111111111111",
    "visa-2": "4012888888881881",
    "visa-13": "4222222222222",
    "mastercard": "5555555555554444",
    "mastercard-2": "5105105105105100",
    "amex": "378282246310005",
    "amex-2": "371449635398431",
    "discover": "6011111111111117",
    "discover-2": "6011000990139424",
    "jcb": "3530111333300000",
    "jcb-2": "3566002020360505",
    "diners": "30569309025904",
    "diners-2": "38520000023237",
}


def grouped(number: str, sizes: tuple[int, ...], separator: str) -> str:
    """``number`` split into groups of ``sizes`` (the last takes the rest), joined by sep."""
    parts = []
    position = 0
    for size in sizes:
        parts.append(number[position : position + size])
        position += size
    parts.append(number[position:])
    return separator.join(part for part in parts if part)


def matched_texts(text: str) -> list[str]:
    return [text[match.start : match.end] for match in find_card_numbers(text)]


# --- luhn_valid --------------------------------------------------------------------------


@pytest.mark.parametrize("number", TEST_CARDS.values())
def test_published_test_numbers_pass_luhn(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize(
    "digits", ["4111111111111112", "1234567890123", "", "4111 1111 1111 1111", "٤١١١", "abc"]
)
def test_luhn_rejects_bad_checksums_and_non_digits(digits: str) -> None:
    assert not luhn_valid(digits)


# --- formats -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", TEST_CARDS)
@pytest.mark.parametrize("separator", [" ", "-", ""])
def test_each_network_is_found_with_spaces_dashes_or_nothing(name: str, separator: str) -> None:
    number = TEST_CARDS[name]
    # Amex and Diners are printed 4-6-rest; the others in groups of four.
    sizes = (4, 6) if name.startswith(("amex", "diners")) else (4, 4, 4)
    written = grouped(number, sizes, separator)
    text = f"Please charge {written} today."

    matches = find_card_numbers(text)

    assert len(matches) == 1
    assert text[matches[0].start : matches[0].end] == written
    assert matches[0].last4 == number[-4:]


def test_amex_in_its_printed_grouping() -> None:
    assert matched_texts("amex 3782 822463 10005 ok") == ["3782 822463 10005"]


def test_mixed_single_separators_still_count() -> None:
    # Over-redacting an oddly typed number is safer than leaking it.
    assert matched_texts("4111 1111-1111 1111") == ["4111 1111-1111 1111"]


def test_trailing_separator_is_not_part_of_the_match() -> None:
    assert matched_texts("4111111111111111- and 4111-1111-1111-1111 ") == [
        "4111111111111111",
        "4111-1111-1111-1111",
    ]


@pytest.mark.parametrize("text", ["4111  1111 1111 1111", "4111 - 1111 - 1111 - 1111"])
def test_double_or_padded_separators_split_the_sequence(text: str) -> None:
    # Only single separators join groups; these are runs of 4 and 12 digits, or of 4.
    assert find_card_numbers(text) == []


def test_shortest_and_longest_lengths() -> None:
    nineteen = "6011000000000000001"
    assert luhn_valid(nineteen)
    assert matched_texts(f"a {TEST_CARDS['visa-13']} b {nineteen} c") == [
        TEST_CARDS["visa-13"],
        nineteen,
    ]


# --- what is left alone ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "order 4111111111111112 shipped",  # 16 digits failing Luhn
        "order 4111 1111 1111 1112 shipped",
        "ticket 1234567890123",  # 13 digits failing Luhn
        "+44 20 7946 0958",
        "+1-800-555-0199",
        "call 020 7946 0958 or 07700 900123",
        "2024-01-15 12:30",
    ],
)
def test_luhn_failures_and_phone_numbers_are_untouched(text: str) -> None:
    assert find_card_numbers(text) == []
    assert redact_card_numbers(text) == (text, 0)


def test_twelve_digits_are_too_short_even_when_luhn_valid() -> None:
    twelve = "411111111117"
    assert luhn_valid(twelve)
    assert find_card_numbers(f"id {twelve} end") == []


def test_twenty_digit_run_is_not_a_card_even_when_luhn_valid() -> None:
    twenty = "41111111111111111115"
    assert luhn_valid(twenty)
    # The valid 16-digit card inside it is glued to more digits, so it is not found either.
    assert luhn_valid(twenty[:16])
    assert find_card_numbers(f"id {twenty} end") == []
    assert find_card_numbers(f"id {grouped(twenty, (4, 4, 4, 4), '')} end") == []


def test_card_glued_to_a_longer_digit_run_is_not_found() -> None:
    glued = "9" + TEST_CARDS["visa"]
    assert not luhn_valid(glued)
    assert find_card_numbers(glued) == []
    assert find_card_numbers(TEST_CARDS["visa"] + "0") == []


# --- letters, grouping choices -----------------------------------------------------------


def test_digits_glued_to_letters_are_a_card() -> None:
    # Decision: letters are not digits, so they bound the sequence like spaces do; a card
    # pasted inside a reference like this is still a card and must be refused.
    text = "ref4111111111111111x"
    assert matched_texts(text) == ["4111111111111111"]
    assert redact_card_numbers(text) == ("ref[card ending 1111]x", 1)


def test_card_followed_by_expiry_month_group_is_found() -> None:
    text = "card 4111 1111 1111 1111 12/27 cvc 123"
    assert matched_texts(text) == ["4111 1111 1111 1111"]
    assert redact_card_numbers(text) == ("card [card ending 1111] 12/27 cvc 123", 1)


def test_trailing_group_joins_the_card_when_the_longer_span_is_valid() -> None:
    # The rule prefers covering the most digits: 4111...1111 3 is itself a valid 17-digit
    # sequence, so it is redacted whole and its own last four are shown.
    assert luhn_valid("41111111111111113")
    text = "4111 1111 1111 1111 3"
    assert find_card_numbers(text) == [CardMatch(start=0, end=len(text), last4="1113")]


def test_leading_short_group_cannot_steal_part_of_the_card() -> None:
    # "14 4111 1111 1111" is a valid 14-digit sequence, but taking it would leave the card's
    # last group exposed; the whole card covers more digits, so it wins.
    assert luhn_valid("14411111111111")
    text = "no. 14 4111 1111 1111 1111"
    assert matched_texts(text) == ["4111 1111 1111 1111"]
    assert redact_card_numbers(text) == ("no. 14 [card ending 1111]", 1)


def test_two_cards_in_one_run_are_both_found() -> None:
    text = f"{TEST_CARDS['visa']} {TEST_CARDS['mastercard']}"
    assert matched_texts(text) == [TEST_CARDS["visa"], TEST_CARDS["mastercard"]]


# --- several cards, redaction ------------------------------------------------------------


def test_multiple_cards_redacted_exactly_with_count() -> None:
    text = (
        "First 4111 1111 1111 1111, then 5555-5555-5555-4444;\n"
        "amex 378282246310005 and order 4111111111111112 stay."
    )

    redacted, count = redact_card_numbers(text)

    assert count == 3
    assert redacted == (
        "First [card ending 1111], then [card ending 4444];\n"
        "amex [card ending 0005] and order 4111111111111112 stay."
    )
    assert [match.last4 for match in find_card_numbers(text)] == ["1111", "4444", "0005"]


def test_redaction_without_cards_returns_text_unchanged() -> None:
    assert redact_card_numbers("") == ("", 0)
    assert redact_card_numbers("nothing here 123") == ("nothing here 123", 0)


def test_card_match_never_holds_the_full_number() -> None:
    number = TEST_CARDS["visa-2"]
    (match,) = find_card_numbers(f"pay {number}")

    assert match == CardMatch(start=4, end=20, last4="1881")
    for shown in (repr(match), str(match)):
        assert number not in shown
        assert number[:12] not in shown
    assert not hasattr(match, "__dict__")  # slots: nowhere to hide another field


# --- contains_card_number ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "4111 1111 1111 1111",
        {"note": "my card is 4111-1111-1111-1111 thanks"},
        {"4111111111111111": "as a key"},
        {"items": [{"ok": 1}, ["deep", ["er", "5555555555554444"]]]},
        {"amount": 12, "card": 4111111111111111},
        [378282246310005],
        (1, {"set": {"6011111111111117"}}),
        {"float": 4111111111111111.0},
        {4111111111111111: "int key"},
    ],
)
def test_contains_card_number_anywhere_in_json_like_values(value: object) -> None:
    assert contains_card_number(value) is True


@pytest.mark.parametrize(
    "value",
    [
        {"amount": 1999, "currency": "EUR", "note": "order 4111111111111112"},
        ["+44 20 7946 0958", 1234567890123, None, True, 3.5],
        {},
        "",
        None,
        object(),
    ],
)
def test_contains_card_number_false_without_a_card(value: object) -> None:
    assert contains_card_number(value) is False


def test_contains_card_number_survives_deep_and_cyclic_values() -> None:
    deep: object = "4111111111111111"
    for _ in range(10_000):
        deep = [deep]
    assert contains_card_number(deep) is True

    cyclic: list[object] = ["nothing"]
    cyclic.append(cyclic)
    assert contains_card_number(cyclic) is False


# --- performance -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["1 " * 500_000, "1-" * 500_000, "1" * 1_000_000, "0 1-" * 250_000, "4111 " * 200_000],
    ids=["spaces", "dashes", "one-run", "mixed", "card-groups"],
)
def test_one_megabyte_adversarial_input_completes(text: str) -> None:
    # No time is asserted: the point is that these finish (linear scan, no backtracking).
    redacted, count = redact_card_numbers(text)
    assert redacted.count("[card ending") == count
