"""Unit tests for kernel.cards: which sequences count as card numbers, and redacting them."""

from __future__ import annotations

import random
import sys
import unicodedata

import pytest

from kernel import cards
from kernel.cards import (
    MAX_DIGITS,
    MIN_DIGITS,
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


def test_luhn_reads_any_decimal_digit_by_its_value() -> None:
    assert luhn_valid("\u0664" + "\u0661" * 15)  # 4111111111111111 in Arabic-Indic digits
    assert luhn_valid("\uff14\uff11\uff11\uff11" + "1" * 12)
    assert not luhn_valid("\u0664" + "\u0661" * 14 + "\u0662")


@pytest.mark.parametrize(
    "digits",
    ["4111111111111112", "1234567890123", "", "4111 1111 1111 1111", "٤١١١", "abc", "\u00b2\u00b9"],
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


# --- every separator style, every digit script ------------------------------------------
# Each of these is one card as a person may type or paste it; the old detector (ASCII digits,
# exactly one space or dash) found none of them.
SEPARATOR_STYLES = {
    "dots": "4111.1111.1111.1111",
    "tabs": "4111\t1111\t1111\t1111",
    "newlines": "4111\n1111\n1111\n1111",
    "crlf": "4111\r\n1111\r\n1111\r\n1111",
    "double spaces": "4111  1111  1111  1111",
    "three spaces": "4111   1111   1111   1111",
    "padded dashes": "4111 - 1111 - 1111 - 1111",
    "dot and space": "4111. 1111. 1111. 1111",
    "no-break spaces": "4111\u00a01111\u00a01111\u00a01111",
    "narrow no-break spaces": "4111\u202f1111\u202f1111\u202f1111",
    "thin spaces": "4111\u20091111\u20091111\u20091111",
    "ideographic spaces": "4111\u30001111\u30001111\u30001111",
    "en dashes": "4111\u20131111\u20131111\u20131111",
    "em dashes": "4111\u20141111\u20141111\u20141111",
    "minus signs": "4111\u22121111\u22121111\u22121111",
    "non-breaking hyphens": "4111\u20111111\u20111111\u20111111",
    "zero-width spaces": "4111\u200b1111\u200b1111\u200b1111",
    "soft hyphens": "4111\u00ad1111\u00ad1111\u00ad1111",
    "middle dots": "4111\u00b71111\u00b71111\u00b71111",
    "mixed": "4111 -1111.\t1111\u00a0\u20131111",
    "arabic-indic digits": "\u0664\u0661\u0661\u0661 \u0661\u0661\u0661\u0661 "
    "\u0661\u0661\u0661\u0661 \u0661\u0661\u0661\u0661",
    "full-width digits and hyphens": "\uff14\uff11\uff11\uff11\uff0d\uff11\uff11\uff11"
    "\uff11\uff0d\uff11\uff11\uff11\uff11\uff0d\uff11\uff11\uff11\uff11",
    "devanagari digits, no separator": "\u096a\u0967\u0967\u0967" + "\u0967" * 12,
    "scripts mixed in one number": "4111 \u0661\u0661\u0661\u0661 \uff11\uff11\uff11\uff11 1111",
    "13 digits in dots": "4222.2222.22222",
    "19 digits in newlines": "6011\n0000\n0000\n0000\n001",
    "amex with no-break spaces": "3782\u00a0822463\u00a010005",
}


@pytest.mark.parametrize("style", SEPARATOR_STYLES)
def test_a_card_in_any_separator_style_or_digit_script_is_found_whole(style: str) -> None:
    written = SEPARATOR_STYLES[style]
    text = f"Card: {written}!"

    (match,) = find_card_numbers(text)

    assert text[match.start : match.end] == written
    # The last four are shown as ASCII digits, whatever script they were written in.
    assert match.last4 in {"1111", "2222", "0001", "0005"}
    assert redact_card_numbers(text) == (f"Card: [card ending {match.last4}]!", 1)
    assert contains_card_number({"name": text}) is True


@pytest.mark.parametrize(
    "text",
    [
        "4111.1111.1111.1112",  # Luhn fails, in each new style
        "4111\t1111\n1111  1112",
        "\u0664\u0661\u0661\u0661 \u0661\u0661\u0661\u0661 \u0661\u0661\u0661\u0661 "
        "\u0661\u0661\u0661\u0662",
        "4111    1111 1111 1111",  # four separators end a run: runs of 4 and 12 digits
        "4111\n\n\n\n1111\u00a01111\u00a01111",
        "4111 -- 1111 -- 1111 -- 1111",
        "4111/1111/1111/1111",  # slashes, commas, underscores and colons are not separators
        "4111,1111,1111,1111",
        "4111_1111_1111_1111",
        "4111:1111:1111:1111",
        "\u2074\u00b9\u00b9\u00b9 1111 1111 1111",  # superscripts are not decimal digits
        "15.01.2024 \u2013 16.01.2024",  # dates, times, versions, addresses, phone numbers
        "01.02.2024 - 02.03.2024 - 10.10.2025",
        "2024-01-15 12:30, 2024-02-15 09:00",
        "v1.2.3 build 2024.11.23.1456",
        "192.168.100.200 192.168.100.201",
        "+49 30 1234 5678 90",
        "+44\u00a020\u00a07946\u00a00958",
        "+1 (800) 555-0199 ext. 1234",
    ],
)
def test_luhn_failures_long_gaps_other_punctuation_and_dates_are_not_cards(text: str) -> None:
    assert find_card_numbers(text) == []
    assert redact_card_numbers(text) == (text, 0)
    assert contains_card_number(text) is False


# Phone numbers whose digits pass Luhn (one in ten does): what keeps them apart from cards.
CHINA_MOBILE = "86 138 1234 5678"  # 8613812345678 passes Luhn
BRAZIL_MOBILE = "55 11 91234 5601"  # 5511912345601 passes Luhn


def test_an_international_phone_number_is_not_a_card_even_when_it_passes_luhn() -> None:
    for number in (CHINA_MOBILE, BRAZIL_MOBILE):
        assert luhn_valid(number.replace(" ", ""))
        for written in (f"+{number}", f"\uff0b{number}", "+" + number.replace(" ", "\u00a0")):
            assert find_card_numbers(f"call {written}") == []
            assert contains_card_number({"phone": written}) is False
        # The plus is what makes it a phone number: the same digits alone are a card.
        assert matched_texts(f"call {number}") == [number]


def test_a_plus_sign_excuses_no_more_than_a_phone_number_can_hold() -> None:
    # 16 digits are no E.164 phone number, and a card later in the run is still found.
    assert matched_texts("+4111 1111 1111 1111") == ["4111 1111 1111 1111"]
    assert matched_texts("+1 555 0100 4111 1111 1111 1111") == ["4111 1111 1111 1111"]


def test_no_card_number_starts_with_a_zero() -> None:
    digits = "004915112345" + "9"
    assert luhn_valid(digits)
    assert find_card_numbers("0049 151 1234 59 (from abroad)") == []
    assert find_card_numbers("invoice 0000 0000 0000 0000") == []
    # A card after a leading zero group is still found.
    assert matched_texts("0 4111 1111 1111 1111") == ["4111 1111 1111 1111"]


def test_the_separators_are_whitespace_dashes_dots_and_invisible_joiners() -> None:
    # The module lists the dashes by hand (scanning Unicode at import is slow): they must be
    # Unicode's category Pd, so a new Python's Unicode cannot silently add one it misses.
    dashes = {chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Pd"}
    assert dashes | {"\u2212"} == set(cards._DASHES)
    for char in "\t\n\r\x0b\x0c \u00a0\u2007\u2009\u202f\u3000.\u00b7\uff0e-\u2013\u200b\ufeff":
        assert cards.is_separator(char), repr(char)
    for char in "/,_:;+()#x0\u0660\u00b2":
        assert not cards.is_separator(char), repr(char)


def reference_cards(text: str) -> list[CardMatch]:
    """The module's rule written the obvious way (quadratic, one character at a time)."""
    groups: list[tuple[int, int]] = []  # (start, end) of each digit group
    index = 0
    while index < len(text):
        if text[index].isdecimal():
            end = index
            while end < len(text) and text[end].isdecimal():
                end += 1
            groups.append((index, end))
            index = end
        else:
            index += 1
    runs: list[list[tuple[int, int]]] = []
    for group in groups:
        gap = text[runs[-1][-1][1] : group[0]] if runs else ""
        if runs and 1 <= len(gap) <= 3 and all(cards.is_separator(c) for c in gap):
            runs[-1].append(group)
        else:
            runs.append([group])
    found: list[CardMatch] = []
    for run in runs:
        values = ["".join(str(unicodedata.decimal(c)) for c in text[s:e]) for s, e in run]

        after_plus = run[0][0] > 0 and text[run[0][0] - 1] in "+\uff0b"

        def card(i: int, j: int, values=values, after_plus=after_plus) -> bool:
            digits = "".join(values[i : j + 1])
            phone = after_plus and i == 0 and len(digits) <= 15
            return (
                MIN_DIGITS <= len(digits) <= MAX_DIGITS
                and luhn_valid(digits)
                and not digits.startswith("0")
                and not phone
            )

        count = len(run)
        best, choice = [0] * (count + 1), [-1] * (count + 1)
        for i in range(count - 1, -1, -1):
            best[i] = best[i + 1]
            for j in range(i, count):
                covered = len("".join(values[i : j + 1])) + best[j + 1]
                if card(i, j) and covered >= best[i]:
                    best[i], choice[i] = covered, j
        i = 0
        while i < count:
            j = choice[i]
            if j < 0:
                i += 1
                continue
            last4 = "".join(values[i : j + 1])[-4:]
            found.append(CardMatch(start=run[i][0], end=run[j][1], last4=last4))
            i = j + 1
    return found


def test_the_detector_agrees_with_the_rule_written_the_obvious_way() -> None:
    # Short random texts of digits in three scripts, every kind of separator, and other
    # characters: thousands of them, each compared with the reference above.
    rng = random.Random(16)
    alphabet = (
        list("0123456789" * 6)
        + ["\u0660", "\u0669", "\uff10", "\uff19", "\u0966"]
        + [" "] * 8
        + ["-", ".", "\t", "\n", "\u00a0", "\u2013", "\u200b"]
        + ["a", "/", ",", "x", "+", "+", "\uff0b"]
    )
    # Seeded with runs of real cards, so many texts hold one, two or overlapping candidates.
    seeds = [grouped(number, (4, 4, 4), " ") for number in TEST_CARDS.values()]
    for _ in range(3000):
        pieces = [rng.choice(alphabet) for _ in range(rng.randint(0, 60))]
        if rng.random() < 0.5:
            pieces.insert(rng.randint(0, len(pieces)), rng.choice(seeds))
        text = "".join(pieces)
        expected = reference_cards(text)
        assert find_card_numbers(text) == expected, repr(text)
        assert contains_card_number(text) is bool(expected), repr(text)


def test_many_runs_and_values_checked_together_agree_with_each_checked_alone() -> None:
    # contains_card_number tests every run of every text of a value in one pass: no run may
    # borrow digits from another, and a plus sign excuses only the run right after it.
    # The end of one run, a whole 13-digit run and the start of the next spell a card.
    three_runs = "1234567890123 4    1111111111111    11 2222222222222"
    assert luhn_valid("4" + "1" * 15) and reference_cards(three_runs) == []
    assert contains_card_number(three_runs) is False
    assert contains_card_number(three_runs.split("    ")) is False

    rng = random.Random(17)
    alphabet = list("0123456789" * 4) + [" ", " ", "-", ".", "+", "x", "\u0661", "\u00a0"]
    seeds = [grouped(number, (4, 4, 4), " ") for number in TEST_CARDS.values()]
    seeds += ["4111111111112", "+4111111111111111", "1" * 25, "0" * 19]
    for _ in range(500):
        texts = []
        for _ in range(rng.randint(1, 12)):
            pieces = [rng.choice(alphabet) for _ in range(rng.randint(0, 40))]
            if rng.random() < 0.3:
                pieces.insert(rng.randint(0, len(pieces)), rng.choice(seeds))
            texts.append("".join(pieces))
        expected = any(reference_cards(text) for text in texts)
        assert contains_card_number(texts) is expected, texts
        # Runs apart (four separators end one) in one text: the same answer.
        assert contains_card_number("    ".join(texts)) is bool(
            reference_cards("    ".join(texts))
        ), texts


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
    [
        "1 " * 500_000,
        "1-" * 500_000,
        "1" * 1_000_000,
        "0 1-" * 250_000,
        "4111 " * 200_000,
        "8 5 1 " * 175_000,  # a third of all spans are cards: the densest short period
        "1   " * 250_000,
        "1    " * 200_000,
        "\u0661\u00a0" * 500_000,
        "12 34 5678 x " * 80_000,
    ],
    ids=[
        "spaces",
        "dashes",
        "one-run",
        "mixed",
        "card-groups",
        "dense-cards",
        "three-spaces",
        "four-spaces",
        "arabic-nbsp",
        "short-numbers",
    ],
)
def test_one_megabyte_adversarial_input_completes(text: str) -> None:
    # No time is asserted (bench/cards.py measures it): the point is that these finish
    # (linear work, no backtracking) and agree with each other.
    redacted, count = redact_card_numbers(text)
    assert redacted.count("[card ending") == count
    assert contains_card_number(text) is (count > 0)


def test_a_uuid_is_an_id_not_a_card() -> None:
    # Its digit-only groups 4883-8634-6522265 pass Luhn: read as a card, an access record's
    # resource id was rewritten and an Idempotency-Key refused.
    uuid = "d6b2ff92-8c27-4883-8634-6522265f14f4"
    assert luhn_valid("488386346522265")
    assert find_card_numbers(uuid) == []
    assert find_card_numbers(uuid.upper()) == []
    assert not contains_card_number({"ids": [uuid]})
    # A card beside an id, or an id-like run that is not a whole UUID, is still a card.
    assert [m.last4 for m in find_card_numbers(f"{uuid} 4111 1111 1111 1111")] == ["1111"]
    assert find_card_numbers("8c27-4883-8634-6522265f14f4") != []
    # One of digits alone can spell a card in that shape: it is read as digits.
    assert find_card_numbers("41111111-1111-1111-1111-111111111111") != []
