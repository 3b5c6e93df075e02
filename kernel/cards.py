"""Finding card numbers in free text, so commands can refuse them and logs never hold them.

Customers paste card numbers into tickets, names, phone fields. Nothing in Ledgerdesk may store
or echo one, so this module finds anything that looks like a payment card number, can redact
it, and can tell whether a JSON-like value holds one anywhere.

The matching rule
-----------------
1. A *digit* is any Unicode decimal digit (``str.isdecimal``: ASCII, Arabic-Indic, Devanagari,
   full-width...), read as its value. A *separator* is any Unicode whitespace (``str.isspace``:
   tab, newline, no-break and thin spaces, ideographic space...), a dash (Unicode category Pd,
   and the minus sign), a dot (``.``, middle dot, one-dot leader, small and full-width full
   stops) or an invisible joiner (soft hyphen, zero-width space and joiners, word joiner, BOM).
   ``/`` ``,`` ``_`` and ``:`` are not separators: they write dates, times, lists and ids.
2. Split the text into *runs*: maximal sequences of digit *groups* where consecutive groups are
   joined by 1 to 3 separators, mixed as they come (``4111 1111-1111 1111``, ``4111 - 1111``,
   ``4111\\r\\n1111``, ``4111.1111``). Four separators or more (a blank line, a padded
   column) end a run, and so does anything else, letters included, so
   ``ref4111111111111111x`` holds a card.
3. A *candidate* is a span of whole consecutive groups of one run holding 13 to 19 digits in
   total. Spans never start or end inside a group, so a candidate never has a digit right
   before or after it, and a 20+ digit group is never a card.
4. A candidate *is a card* when its digits pass the Luhn check, its first digit is not 0 (no
   card number starts with 0, ISO/IEC 7812), and it is not a phone number in international
   form: 13 to 15 digits right after a ``+`` (E.164 numbers have at most 15 digits, and a
   card is not written with a plus). Order and phone numbers that fail these are left alone.
5. A UUID in its canonical form (8-4-4-4-12 hex digits, a letter among them) is an id,
   never part of a card.
6. Within a run, the cards reported are the non-overlapping set of cards covering the most
   digits (ties: the one whose first card starts earliest, then the longer card). So a
   trailing short group (``4111 1111 1111 1111 12/27``) never hides the card before it, and a
   leading one (``ref 12 4111 1111 1111 1111``) cannot steal part of it: redaction hides as
   many digits as any reading of the run allows.

The cost
--------
Every free-text field of every command is checked (``kernel.commands``), and a request body
may be 1 MiB, so the work is linear in the length of the text and runs mostly in C (figures:
``python -m bench --only cards``). One regular expression finds the runs of 13 digits or more;
its quantifiers are possessive, so it never backtracks, and shorter digit sequences never leave
the regex engine. Each run is rewritten one byte per character (digits to ASCII, separators to
a space), and the Luhn test of every candidate is done once per length of 13 to 19 digits over
whole byte strings (``_passing``), with no Python loop per digit. Only redaction, which must
choose among the cards of a run, walks the candidates that passed one by one.

What is paid per call rather than per character is kept out of the refusal check, since a
request of many small values or many short runs would multiply it: ``contains_card_number``
collects every text of a value long enough to hold a card and tests them together, and all
the runs of a text go through ``_passing`` in one call (``_holds_card``).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, compress

MIN_DIGITS = 13
MAX_DIGITS = 19
MAX_SEPARATORS = 3  # between two groups of one run
PHONE_DIGITS = 15  # the most an international (E.164) phone number has
_PLUS = "+\uff0b"

# Unicode category Pd (test_cards checks this list against unicodedata), and the minus sign.
_DASHES = (
    "-\u058a\u05be\u1400\u1806\u2010\u2011\u2012\u2013\u2014\u2015\u2e17\u2e1a\u2e3a\u2e3b"
    "\u2e40\u2e5d\u301c\u3030\u30a0\ufe31\ufe32\ufe58\ufe63\uff0d\U00010ead"
) + "\u2212"
_DOTS = ".\u00b7\u2024\ufe52\uff0e"
# Invisible, and so the easiest way to split a number that a reader still sees whole.
_INVISIBLE = "\u00ad\u200b\u200c\u200d\u2060\ufeff"
_PUNCTUATION = _DASHES + _DOTS + _INVISIBLE


def is_separator(char: str) -> bool:
    """True when ``char`` may join two digit groups of one card number (the rule above)."""
    return char.isspace() or char in _PUNCTUATION


def _run_pattern(digit: str, separator: str) -> re.Pattern[str]:
    # A digit, 12 more each after 0-3 separators, then the rest of the run group by group: a
    # run of at least 13 digits, so the bulk of ordinary text never leaves the regex engine.
    # Digits and separators are disjoint classes, so giving back a separator can never help
    # a match: every quantifier is possessive, and the engine never backtracks.
    sep = f"{separator}{{0,{MAX_SEPARATORS}}}+"
    return re.compile(f"{digit}(?:{sep}{digit}){{{MIN_DIGITS - 1}}}(?:{sep}{digit}++)*+")


# In Python's str patterns \d is exactly str.isdecimal and \s exactly str.isspace.
_RUN = _run_pattern(r"\d", "[\\s" + re.escape(_PUNCTUATION) + "]")
# The same rule for ASCII text (most text): smaller classes match faster (docs/performance.md,
# section 7).
_ASCII_SEPARATORS = "".join(c for c in map(chr, range(128)) if is_separator(c))
_ASCII_RUN = _run_pattern("[0-9]", "[" + re.escape(_ASCII_SEPARATORS) + "]")
_ASCII_CANONICAL = bytes.maketrans(_ASCII_SEPARATORS.encode(), b" " * len(_ASCII_SEPARATORS))


class _Canonical(dict[int, str]):
    """``str.translate`` table of a run: a digit to its ASCII value, a separator to a space.

    Filled on first sight of a character; it can only ever hold the few hundred digits and
    separators Unicode has.
    """

    def __missing__(self, code: int) -> str:
        char = chr(code)
        value = " " if is_separator(char) else str(unicodedata.decimal(char))
        self[code] = value
        return value


_CANONICAL = _Canonical()
_VALUE = bytes.maketrans(b"0123456789", bytes(range(10)))
# Luhn's doubled value of each digit, with the two digits of the product already added.
_DOUBLED = bytes.maketrans(b"0123456789", bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))
# A run's shape: 0xFF for a digit, 0x00 for a separator.
_SHAPE = bytes.maketrans(b"0123456789 ", b"\xff" * 10 + b"\x00")
# 0xFF where a digit is 0: no card starts there.
_ZERO = bytes.maketrans(b"0123456789", b"\xff" + b"\x00" * 9)


@dataclass(frozen=True, slots=True)
class CardMatch:
    """Where a card number sits in a text: ``text[start:end]``.

    Only the last four digits are kept (as ASCII), so a match can be logged or shown safely.
    """

    start: int
    end: int
    last4: str


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (decimal digits only, at least one) passes the Luhn check."""
    if not digits or not digits.isdecimal():
        return False
    total = 0
    # Counting from the right, every second digit is doubled; subtracting 9 equals adding
    # the two digits of the doubled value.
    for index, char in enumerate(reversed(digits)):
        value = unicodedata.decimal(char)
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


# A UUID in its canonical form is an id, not a card: its all-digit groups joined by dashes
# make a Luhn-valid run about once in 390 random ids, which would refuse an Idempotency-Key or
# rewrite an id in the access log. Masked before runs are sought (offsets do not move).
_UUID = re.compile(
    r"(?<![0-9A-Za-z])[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}(?![0-9A-Za-z])"
)


_HEX_LETTER = re.compile("[A-Fa-f]")


def _without_uuids(text: str) -> str:
    if "-" not in text:
        return text
    # Only one with a hex letter: a random UUID has some (all 30 random digits decimal: one in
    # a million and a half), and one of digits alone can spell a card it was made to hide.
    return _UUID.sub(
        lambda m: "x" * len(m.group()) if _HEX_LETTER.search(m.group()) else m.group(), text
    )


def _runs(text: str) -> Iterator[tuple[re.Match[str], bool]]:
    """Each run of 13 digits or more, and whether a plus sign comes right before it."""
    text = _without_uuids(text)
    for run in (_ASCII_RUN if text.isascii() else _RUN).finditer(text):
        yield run, run.start() > 0 and text[run.start() - 1] in _PLUS


def _canonical(run: str) -> bytes:
    """``run`` one byte per character: ASCII digits, and a space for each separator."""
    if run.isascii():
        return run.encode("ascii").translate(_ASCII_CANONICAL)
    return run.translate(_CANONICAL).encode("ascii")


# Chunks of 28 values of 0-9 sum to at most 252: a chunk's running sums fit in bytes.
_CHUNK = 28
# _ADD_MOD_10[base]: a byte table turning a running sum s into (base + s) mod 10.
_ADD_MOD_10 = tuple(bytes((base + s) % 10 for s in range(256)) for base in range(10))


def _sums_mod_10(values: bytes | bytearray) -> bytes:
    """The prefix sums of ``values`` (each 0-9) mod 10, from the empty prefix: one byte more.

    Chunk by chunk, so the per-value work (``accumulate``, ``translate``) runs in C.
    """
    sums = bytearray(1)
    for index in range(0, len(values), _CHUNK):
        running = bytes(accumulate(values[index : index + _CHUNK]))
        sums += running.translate(_ADD_MOD_10[sums[-1]])
    return bytes(sums)


def _passing(
    canonical: bytes, phone_starts: Sequence[int] = (), runs: bytes = b""
) -> Iterator[tuple[int, bytes]]:
    """For each length of 13 to 19 digits, a byte per digit of a run where a span of that
    many digits may start: 0x00 where it is a card (a candidate that passes the rule's tests).
    ``phone_starts``: the digits a plus sign comes right before (where 13 to 15 digits are a
    phone number). ``runs``, when ``canonical`` is several runs joined by a space: a byte per
    digit, the same within a run and different from those of the runs around it (``_TURNS``);
    a span is a candidate only within one run.

    In digit positions (separators dropped): the Luhn sum of digits ``[a, b)`` doubles the
    digits whose index has the parity of ``b`` (the last digit is never doubled). With the
    prefix sums (mod 10) ``E`` of the digits doubling the even indexes and ``O`` doubling the
    odd ones, ``[a, b)`` passes when ``E[b] == E[a]`` for an even ``b``, ``O[b] == O[a]`` for
    an odd one. Interleave them: ``M[i]`` is ``E[i]`` for an even ``i`` and ``O[i]`` for an odd
    one, ``N`` the other way round; then a span of length ``L`` passes when
    ``M[a + L] == (M if L is even else N)[a]``. It is a candidate when ``a`` and ``a + L`` are
    group boundaries. For each ``L`` the conditions are tested over every ``a`` at once, on
    byte strings read as integers: XOR leaves a zero byte where two bytes are equal, and OR
    with 0xFF (not a boundary, a leading 0) at ``a`` or at ``a + L`` keeps only the cards.
    """
    digits = canonical.replace(b" ", b"")
    length = len(digits)
    if length > MAX_DIGITS and len(canonical) == length:
        return  # one group, too long to be a card
    value, doubled = digits.translate(_VALUE), digits.translate(_DOUBLED)
    even_doubled, odd_doubled = bytearray(value), bytearray(value)
    even_doubled[0::2] = doubled[0::2]
    odd_doubled[1::2] = doubled[1::2]
    even_sums, odd_sums = _sums_mod_10(even_doubled), _sums_mod_10(odd_doubled)
    same, other = bytearray(odd_sums), bytearray(even_sums)
    same[0::2], other[0::2] = even_sums[0::2], odd_sums[0::2]

    # 0x00 at each group boundary (before the first digit of a group, and after the last
    # digit of the run), 0xFF elsewhere: collapse each separator sequence (at most three) to
    # one byte, then let it stand for the digit that follows it.
    shape = canonical.translate(_SHAPE)
    while b"\x00\x00" in shape:
        shape = shape.replace(b"\x00\x00", b"\x00")
    not_boundary = b"\x00" + shape.replace(b"\x00\xff", b"\x00")[1:] + b"\x00"
    not_end = int.from_bytes(not_boundary)
    not_start = not_end | int.from_bytes(digits.translate(_ZERO) + b"\x00")

    phone = 0
    if phone_starts:
        at_plus = bytearray(length + 1)
        for start in phone_starts:
            at_plus[start] = 0xFF
        phone = int.from_bytes(at_plus)

    run_of = int.from_bytes(runs)
    sums = (int.from_bytes(same), int.from_bytes(other))
    for span in range(MIN_DIGITS, min(MAX_DIGITS, length) + 1):
        starts = length + 1 - span  # a = 0 .. length - span
        at_end = (1 << (8 * starts)) - 1  # the last ``starts`` bytes: index a + span
        missed = (
            ((sums[0] & at_end) ^ (sums[span % 2] >> (8 * span)))
            | (not_end & at_end)
            | (not_start >> (8 * span))
        )
        if run_of:
            # The run of digit a against that of digit a + span - 1: not 0 where they differ.
            missed |= (run_of >> (8 * (span - 1))) ^ (run_of & at_end)
        if phone and span <= PHONE_DIGITS:
            missed |= phone >> (8 * span)  # a phone number, not a card
        yield span, missed.to_bytes(starts)


# A run and the plus sign right before it (its first 13 to 15 digits are a phone number).
_PLUS_RUN = re.compile(f"[{_PLUS}]({_RUN.pattern})")
_ASCII_PLUS_RUN = re.compile(f"\\+({_ASCII_RUN.pattern})")
# Stands for a run tested as a phone number once it is cut out of a text: no digit, no
# separator, no letter, so nothing next to it joins up with anything else.
_CUT = "\x00"
# Joins runs to test them together; kept as it is by ``_canonical``.
_JOINT = "|"
_CANONICAL[ord(_JOINT)] = _JOINT
# A run has 13 digits or more, so a span of at most 19 can touch three runs (the end of one, a
# whole one, the start of the next), never four: three marks by turns tell any two apart.
_TURNS = (b"\x00", b"\x01", b"\x02")


def _testable(runs: list[str]) -> list[str]:
    # One group too long to be a card (the integer form of 1e300, say): nothing to test.
    return [run for run in runs if len(run) <= MAX_DIGITS or not run.isdecimal()]


def _holds_card(text: str) -> bool:
    """Whether any run of ``text`` holds a card.

    All the runs are tested in one pass of ``_passing``: its cost per call, not per digit, is
    what a text of many short runs (``4111111111112    `` over and over) would otherwise
    multiply. Runs are independent of each other, so their order does not matter.
    """
    text = _without_uuids(text)
    ascii_text = text.isascii()
    phones: list[str] = []
    if "+" in text or (not ascii_text and _PLUS[1] in text):
        plus_run = _ASCII_PLUS_RUN if ascii_text else _PLUS_RUN
        phones = _testable(plus_run.findall(text))
        text = plus_run.sub(_CUT, text)
    runs = phones + _testable((_ASCII_RUN if ascii_text else _RUN).findall(text))
    if not runs:
        return False
    canonical = _canonical(_JOINT.join(runs))
    turns: list[bytes] = []
    phone_starts: list[int] = []
    digits = 0
    for index, run in enumerate(canonical.split(_JOINT.encode())):
        if index < len(phones):
            phone_starts.append(digits)
        count = len(run) - run.count(b" ")
        turns.append(_TURNS[index % 3] * count)
        digits += count
    canonical = canonical.replace(_JOINT.encode(), b" ")
    run_turns = b"".join(turns) if len(runs) > 1 else b""
    return any(missed.find(0) >= 0 for _, missed in _passing(canonical, phone_starts, run_turns))


# Bit k of a start's byte: a card of MIN_DIGITS + k digits starts there. Its lengths, shortest
# first, for each byte value.
_LENGTHS = tuple(tuple(MIN_DIGITS + k for k in range(8) if bits >> k & 1) for bits in range(256))
_FLAGS = {
    span: bytes.maketrans(bytes(range(256)), bytes([1 << (span - MIN_DIGITS)]) + bytes(255))
    for span in range(MIN_DIGITS, MAX_DIGITS + 1)
}


def _best_cover(canonical: bytes, after_plus: bool) -> list[tuple[int, int]]:
    """The cards of a run as ``(first digit, digit count)``: the non-overlapping candidates
    that pass and cover the most digits (ties as the module rule says)."""
    flags = 0
    size = 0
    for span, missed in _passing(canonical, (0,) if after_plus else ()):
        size = size or len(missed)
        flags |= int.from_bytes(missed.translate(_FLAGS[span]) + bytes(span - MIN_DIGITS))
    if not flags:
        return []
    starts = flags.to_bytes(size)
    candidates = list(compress(range(size), starts))
    # best[a]: most digits coverable by cards starting at digit a or later; take[a]: the
    # length of the card starting at a in that cover, 0 to skip a. Filled right to left,
    # candidate by candidate; a digit where no card starts has the best of the next one.
    best = [0] * (size + MAX_DIGITS + 1)
    take = [0] * size
    filled = size  # best[filled:] is known
    for start in reversed(candidates):
        if filled > start + 1:
            best[start + 1 : filled] = [best[filled]] * (filled - start - 1)
        best_here = best[start + 1]
        for span in _LENGTHS[starts[start]]:
            covered = span + best[start + span]
            # ">=" so that on a tie a card starting here wins over skipping this digit, and
            # the longer card wins over a shorter one starting at the same digit.
            if covered >= best_here:
                best_here = covered
                take[start] = span
        best[start] = best_here
        filled = start
    cover: list[tuple[int, int]] = []
    reach = 0
    for start in candidates:
        if start >= reach and take[start]:
            cover.append((start, take[start]))
            reach = start + take[start]
    return cover


def find_card_numbers(text: str) -> list[CardMatch]:
    """Every card-number-like sequence in ``text``, in order, never overlapping."""
    cards: list[CardMatch] = []
    for run, after_plus in _runs(text):
        canonical = _canonical(run.group())
        cover = _best_cover(canonical, after_plus)
        if not cover:
            continue
        digits = canonical.replace(b" ", b"")
        # Where each digit sits in the run, to map digit spans back to the text.
        at = list(compress(range(len(canonical)), canonical.translate(_SHAPE)))
        for start, span in cover:
            stop = start + span
            cards.append(
                CardMatch(
                    start=run.start() + at[start],
                    end=run.start() + at[stop - 1] + 1,
                    last4=digits[stop - 4 : stop].decode("ascii"),
                )
            )
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
        # form is what the client sent as a JSON number. From 1e19 on it is one group of 20
        # digits or more, never a card (and 1e300, five bytes of JSON, would be 301 to scan).
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e19:
            texts.append(str(int(value)))
        return texts
    return []


# No card has fewer digits: a shorter text, or an integer of fewer digits, cannot hold one.
_SMALLEST_CARD = 10 ** (MIN_DIGITS - 1)
# Joins the texts of one value into one text to scan: neither a digit, nor a separator, nor a
# plus sign, nor a letter or digit a UUID could run into, so no run crosses it and each text
# reads as it does alone.
_JOIN = "\x00"


def contains_card_number(value: object) -> bool:
    """True when any string, key or number anywhere in a JSON-like ``value`` holds a card.

    Walks dicts (keys and values), lists, tuples and sets; other objects are ignored. An
    explicit stack instead of recursion, so a deeply nested request cannot raise
    RecursionError. The answer is a bare bool so callers cannot echo the offending value.

    The cost per value is what bounds a request of many small values (a list of a few hundred
    thousand numbers fits in 1 MiB): the walk only collects the texts that are long enough to
    hold a card, and they are scanned together, once.
    """
    kind = type(value)
    if kind is str:
        return len(value) >= MIN_DIGITS and _holds_card(value)  # type: ignore[arg-type]
    if kind is int:
        return not -_SMALLEST_CARD < value < _SMALLEST_CARD and _holds_card(str(value))  # type: ignore[operator]
    texts: list[str] = []
    stack: list[object] = [value]
    # Containers already walked, by identity, so a self-referencing value cannot loop forever.
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        kind = type(item)
        # The types JSON gives first, by exact type: an isinstance check against an abstract
        # class costs more than the rest of the walk.
        if kind is str:
            if len(item) >= MIN_DIGITS:  # type: ignore[arg-type]
                texts.append(item)  # type: ignore[arg-type]
            continue
        if kind is int:
            if not -_SMALLEST_CARD < item < _SMALLEST_CARD:  # type: ignore[operator]
                texts.append(str(item))
            continue
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
            texts.extend(text for text in _texts_of_scalar(item) if len(text) >= MIN_DIGITS)
    return bool(texts) and _holds_card(_JOIN.join(texts))
