"""Section 7: the card-number check on what one request can hold.

Every free-text field of every command is checked where commands are loaded
(``kernel.commands.load_command``: at the gateway, and again in the service), and a request
body may be 1 MiB, so the detector (``kernel.cards``) is measured in process, no stack needed:

- the refusal check (``contains_card_number``, which reads everything when there is no card)
  over ticket-like text: sentences with order numbers, dates, times, amounts, phone and
  tracking numbers, no card; 1 MiB, and 4 KiB (a typical request);
- redaction (``redact_card_numbers``, tickets' subjects and bodies) over the same text with a
  card pasted every 4 KiB or so;
- both over 1 MiB worst cases made only of digits and separators (the slowest shape is the
  figure; every shape is in the note);
- the refusal check over 1 MiB JSON bodies of many small values (numbers, short strings), as
  ``json.loads`` gives them: what one billing request can make the gateway walk;
- ``load_command`` of a contact: what the check adds to loading one command.

The baseline of the texts is ``json.loads`` of the same text sent as a JSON string, which the
gateway does to every body anyway: the ratio says how many body parses the check costs. Each
figure is the median of several runs, the baseline's runs taken in turn with ours.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.harness import Context, Row
from kernel.cards import contains_card_number, redact_card_numbers
from kernel.commands import load_command
from services.accounts.commands import CreateContactV1

MIB = 1 << 20
TYPICAL = 4 << 10
# 1 MiB of digits and separators, in the shapes that cost the detector most.
WORST = {
    "1-digit groups": "1 ",
    "mixed separators": "0 1-",
    "3 separators": "1   ",
    "4-digit groups": "4111 ",
    "dense cards": "8 5 1 ",  # a third of all 13-19 digit spans are cards
    "arabic-indic, no-break spaces": "\u0661\u00a0",
    "13-digit runs apart": "4111111111112    ",  # a run each: per-run costs add up
}
# 1 MiB JSON bodies of many small values (a list in one field): per-value costs add up.
VALUES = {
    "1-digit numbers": b"1",
    "1-character strings": b'"1"',
    "13-digit numbers": b"4111111111112",
}
CARDS = ("4111 1111 1111 1111", "5555-5555-5555-4444", "3782 822463 10005", "4111.1111.1111.1111")


def ticket_text(size: int, seed: int = 16, cards: bool = False) -> str:
    """Ticket-like text of ``size`` characters: what customers write, digits and all."""
    rng = random.Random(seed)

    def digits(n: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(n))

    sentences: list[Callable[[], str]] = [
        lambda: (
            f"Hi, my order #{digits(6)} placed on 2026-{rng.randint(1, 12):02d}-"
            f"{rng.randint(1, 28):02d} has not arrived yet."
        ),
        lambda: (
            f"I was charged EUR {rng.randint(5, 999)}.{digits(2)} twice at "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}, please refund one of them."
        ),
        lambda: f"You can call me on +44 20 {digits(4)} {digits(4)} or 07700 {digits(6)}.",
        lambda: (
            f"The tracking number is 1Z{digits(3)}AA{digits(10)} and the invoice INV-{digits(6)}."
        ),
        lambda: "The app keeps logging me out since the last update; I reinstalled it twice.",
        lambda: (
            f"Version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)} on "
            f"build {digits(4)}, {rng.randint(2, 64)} GB free."
        ),
        lambda: "Thanks for the quick answer, the export works now.",
    ]
    pieces: list[str] = []
    length = 0
    next_card = TYPICAL
    while length < size:
        if cards and length >= next_card:
            piece = f"My card is {rng.choice(CARDS)}, can you check it?"
            next_card += TYPICAL
        else:
            piece = rng.choice(sentences)()
        pieces.append(piece)
        length += len(piece) + 1
    return " ".join(pieces)[:size]


def seconds(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def in_turn(ours: Callable[[], Any], baseline: Callable[[], Any], runs: int) -> tuple[float, float]:
    """Medians of ``ours`` and ``baseline``, run alternately so both see the same minutes."""
    pairs = [(seconds(ours), seconds(baseline)) for _ in range(runs)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def run(ctx: Context, sections: set[str]) -> list[Row]:
    runs = 1 if ctx.quick else 9
    plain = ticket_text(MIB)
    typical = ticket_text(TYPICAL, seed=4)
    pasted = ticket_text(MIB, cards=True)
    # The figures mean something only if the texts are what they claim to be.
    assert not contains_card_number(plain) and not contains_card_number(typical)
    assert redact_card_numbers(pasted)[1] >= MIB // TYPICAL - 1

    def parse(text: str) -> Callable[[], Any]:
        body = json.dumps(text)
        return lambda: json.loads(body)

    rows: list[Row] = []
    for what, text, target, limit in (
        ("1 MiB", plain, "", None),
        ("4 KiB, a typical request", typical, "< 3 ms", 3.0),
    ):
        ours, base = in_turn(partial(contains_card_number, text), parse(text), runs * 5)
        rows.append(
            Row(
                "cards",
                f"no-card check, ticket-like text, {what}",
                ours * 1000,
                "ms",
                base * 1000,
                "json.loads of the same text",
                target,
                None if limit is None else ours * 1000 < limit,
                "contains_card_number: every character read",
            )
        )

    ours, base = in_turn(lambda: redact_card_numbers(pasted), parse(pasted), runs)
    rows.append(
        Row(
            "cards",
            "redaction, ticket-like text with a card every 4 KiB, 1 MiB",
            ours * 1000,
            "ms",
            base * 1000,
            "json.loads of the same text",
            note=f"{redact_card_numbers(pasted)[1]} cards cut to their last four",
        )
    )

    for name, check in (
        ("no-card check", contains_card_number),
        ("redaction", redact_card_numbers),
    ):
        figures = {}
        for shape, unit in WORST.items():
            worst = partial(check, (unit * (MIB // len(unit) + 1))[:MIB])
            figures[shape] = statistics.median(seconds(worst) for _ in range(runs)) * 1000
        slowest = max(figures, key=figures.__getitem__)
        rows.append(
            Row(
                "cards",
                f"{name}, worst case: 1 MiB of digits and separators",
                figures[slowest],
                "ms",
                note="; ".join(f"{shape} {ms:.0f} ms" for shape, ms in figures.items()),
            )
        )

    figures = {}
    bases = {}
    for shape, unit in VALUES.items():
        body = b"[" + b",".join([unit] * (MIB // (len(unit) + 1))) + b"]"
        value = json.loads(body)
        figures[shape], bases[shape] = in_turn(
            partial(contains_card_number, value), partial(json.loads, body), runs
        )
    slowest = max(figures, key=figures.__getitem__)
    rows.append(
        Row(
            "cards",
            "no-card check, worst case: a 1 MiB JSON body of small values",
            figures[slowest] * 1000,
            "ms",
            bases[slowest] * 1000,
            "json.loads of the same body",
            note="; ".join(f"{shape} {s * 1000:.0f} ms" for shape, s in figures.items()),
        )
    )

    contact = {"name": "Ann Example", "email": "ann@example.com", "phone": "+44 20 7946 0958"}
    ours, base = in_turn(
        lambda: load_command(CreateContactV1, contact),
        lambda: CreateContactV1().load(contact),
        runs * 200,
    )
    rows.append(
        Row(
            "cards",
            "load_command of a contact (check + schema)",
            ours * 1e6,
            "µs",
            base * 1e6,
            "the schema's load alone",
        )
    )
    return rows
