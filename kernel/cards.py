"""Finding card numbers in free text, so billing can refuse them and logs never hold them.

Customers paste card numbers into tickets. Nothing in Ledgerdesk may store or echo one, so
this module finds anything that looks like a payment card number, can redact it, and can
tell whether a JSON-like value holds one anywhere.

The matching rule
-----------------
1. Split the text into *runs*: maximal sequences of ASCII digit *groups* where consecutive
   groups are joined by exactly one space or exactly one dash (``4111 1111-1111 1111`` is
   one run of four groups; ``4111  1111`` or ``4111 - 1111`` are separate runs). Only ASCII
   ``0``-``9`` count as digits; anything else, letters included, ends a run, so
   ``ref4111111111111111x`` holds a card.
2. A *candidate* is a span of whole consecutive groups of one run holding 13 to 19 digits in
   total. Spans never start or end inside a group, so a candidate never has a digit right
   before or after it, and a 20+ digit group is never a card.
3. A candidate *is a card* when its digits pass the Luhn check. Order and phone numbers
   that fail Luhn are left alone.
4. Within a run, the cards reported are the non-overlapping set of cards covering the most
   digits (ties: the one whose first card starts earliest, then the longer card). So a
   trailing short group (``4111 1111 1111 1111 12/27``) never hides the card before it, and
   a leading one (``ref 12 4111 1111 1111 1111``) cannot steal part of it: redaction hides
   as many digits as any reading of the run allows.

Every run is scanned once and each group starts at most 7 candidates (one per total of 13
to 19 digits), each found by bisection and checked in constant time from prefix sums, so the
work is linear in the length of the text; no backtracking regular expression is involved.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass

MIN_DIGITS = 13
MAX_DIGITS = 19

# A plain character class with a single quantifier: it cannot backtrack catastrophically.
_GROUP = re.compile(r"[0-9]+")
_SEPARATORS = frozenset(" -")
# Luhn's doubled value of each digit, with the two digits of the product already added.
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


@dataclass(frozen=True, slots=True)
class CardMatch:
    """Where a card number sits in a text: ``text[start:end]``.

    Only the last four digits are kept, so a match can be logged or shown safely.
    """

    start: int
    end: int
    last4: str


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (ASCII digits only, at least one) passes the Luhn check."""
    if not digits or not (digits.isascii() and digits.isdigit()):
        return False
    total = 0
    # Counting from the right, every second digit is doubled; subtracting 9 equals adding
    # the two digits of the doubled value.
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _runs(text: str) -> list[list[tuple[int, int]]]:
    """Groups of digits as ``(start, end)`` offsets, gathered into runs (see the module rule)."""
    runs: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    for match in _GROUP.finditer(text):
        start, end = match.span()
        if current:
            previous_end = current[-1][1]
            if start == previous_end + 1 and text[previous_end] in _SEPARATORS:
                current.append((start, end))
                continue
            runs.append(current)
        current = [(start, end)]
    if current:
        runs.append(current)
    return runs


def _cards_in_run(text: str, groups: list[tuple[int, int]]) -> list[CardMatch]:
    digits = "".join(text[start:end] for start, end in groups)
    if len(digits) < MIN_DIGITS:
        return []

    # Offset in ``digits`` of each group's first digit, plus one for the end of the run.
    offsets = [0]
    for start, end in groups:
        offsets.append(offsets[-1] + end - start)

    # Prefix sums (mod 10) of the digits under both alternations of doubling, so the Luhn sum
    # of any slice is a subtraction. A slice's last digit is never doubled, hence the doubled
    # digits are those whose index has the parity of the slice's stop index: even stops use
    # ``even_doubled`` and odd stops ``odd_doubled``.
    even_doubled = [0]
    odd_doubled = [0]
    for index, char in enumerate(digits):
        value = ord(char) - 48
        if index % 2:
            even_doubled.append((even_doubled[-1] + value) % 10)
            odd_doubled.append((odd_doubled[-1] + _DOUBLED[value]) % 10)
        else:
            even_doubled.append((even_doubled[-1] + _DOUBLED[value]) % 10)
            odd_doubled.append((odd_doubled[-1] + value) % 10)

    # best[i]: most digits coverable by cards using groups i.. ; choice[i]: the last group of
    # the card starting at group i in that best cover, or -1 to skip group i. Filled right to
    # left, so each group is decided once.
    count = len(groups)
    best = [0] * (count + 1)
    choice = [-1] * (count + 1)
    for i in range(count - 1, -1, -1):
        first = offsets[i]
        best_here = best[i + 1]
        choice_here = -1
        # Jump straight to the spans ending 13 to 19 digits from here: the groups in between
        # cannot end a card, and walking them made long runs of 1-digit groups slow.
        for stop_index in range(
            bisect_left(offsets, first + MIN_DIGITS, i + 1),
            bisect_right(offsets, first + MAX_DIGITS, i + 1),
        ):
            stop = offsets[stop_index]
            sums = odd_doubled if stop % 2 else even_doubled
            if sums[stop] == sums[first]:
                covered = stop - first + best[stop_index]
                # ">=" so that on a tie the card starting here wins over skipping this group,
                # and the longer card wins over a shorter one starting at the same group.
                if covered >= best_here:
                    best_here = covered
                    choice_here = stop_index - 1
        best[i] = best_here
        choice[i] = choice_here

    cards: list[CardMatch] = []
    i = 0
    while i < count:
        j = choice[i]
        if j < 0:
            i += 1
            continue
        last4 = digits[offsets[j + 1] - 4 : offsets[j + 1]]
        cards.append(CardMatch(start=groups[i][0], end=groups[j][1], last4=last4))
        i = j + 1
    return cards


def find_card_numbers(text: str) -> list[CardMatch]:
    """Every card-number-like sequence in ``text``, in order, never overlapping."""
    cards: list[CardMatch] = []
    for groups in _runs(text):
        cards.extend(_cards_in_run(text, groups))
    return cards


def redact_card_numbers(text: str) -> tuple[str, int]:
    """``text`` with each card number replaced by ``[card ending 1234]``, and how many."""
    cards = find_card_numbers(text)
    if not cards:
        return text, 0
    pieces: list[str] = []
    position = 0
    for card in cards:
        pieces.append(text[position : card.start])
        pieces.append(f"[card ending {card.last4}]")
        position = card.end
    pieces.append(text[position:])
    return "".join(pieces), len(cards)


def _texts_of_scalar(value: object) -> list[str]:
    """The strings a scalar could reveal a card number through."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, bool):
        # bool is an int subclass, but True/False can never hold a card number.
        return []
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, float):
        texts = [repr(value)]
        # Large integral floats print in exponent form (4.111111111111111e+15); their integer
        # form is what the client sent as a JSON number.
        if math.isfinite(value) and value.is_integer():
            texts.append(str(int(value)))
        return texts
    return []


def contains_card_number(value: object) -> bool:
    """True when any string, key or number anywhere in a JSON-like ``value`` holds a card.

    Walks dicts (keys and values), lists, tuples and sets; other objects are ignored. An
    explicit stack instead of recursion, so a deeply nested request cannot raise
    RecursionError. The answer is a bare bool so callers cannot echo the offending value.
    """
    stack: list[object] = [value]
    # Containers already walked, by identity, so a self-referencing value cannot loop forever.
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping | list | tuple | set | frozenset):
            if id(item) in seen:
                continue
            seen.add(id(item))
        if isinstance(item, Mapping):
            for key, inner in item.items():
                stack.append(key)
                stack.append(inner)
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        else:
            for text in _texts_of_scalar(item):
                if find_card_numbers(text):
                    return True
    return False
