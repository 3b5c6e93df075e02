"""Client JSON, read with bounded cost: a size per route, and a nesting depth checked before
anything parses it.

Python's ``json`` recurses once per level of nesting, so ``[`` repeated a hundred thousand times
raises ``RecursionError`` (a 500) instead of a ``ValueError``, and every walk of what it built
recurses or stacks as deep. The depth is found first, without recursion and mostly in C: strings
are cut out (a bracket inside one is text), what remains is reduced to its brackets, and the
deepest point is the largest running sum of +1 per opening and -1 per closing bracket.
"""

from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
from typing import Any

# What a route reads of a body at most, refused (413) before it is parsed: what it costs to
# parse and scan for card numbers grows with it. The largest valid command but a ticket's or a
# message's is about 13 KB even with every character sent as a \u escape; those two hold up to
# 100,000 characters of text, and have the most.
MAX_BODY_BYTES = 1 << 20
BODY_BYTES = 64 << 10
# An upload is never parsed nor held: it is streamed to tickets a chunk at a time, and its own
# limit is a setting (LEDGERDESK_ATTACHMENT_MAX_BYTES), checked by the route and by tickets.
# This only keeps werkzeug from cutting it short.
UPLOAD_BODY_BYTES = 1 << 40

# The API's commands nest three levels at most (a body, an object in it, a list in that). 32 is
# far above any schema it may grow, and far below the interpreter's recursion limit (1000), so
# neither the parser nor a walk of its result can run out of stack.
MAX_JSON_DEPTH = 32

# A JSON string, escapes and all, possessive; an unterminated one runs to the end of the text.
# Were it to need its closing quote, ``sub`` would try again from each quote inside it, each try
# running to the end: a body of one quote and then ``\"`` repeated took seconds per 64 KiB
# (quadratic). The parser refuses an unterminated string, so what follows it is never parsed.
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
# As signed bytes: +1 for an opening bracket, -1 for a closing one.
_STEPS = str.maketrans({"[": "\x01", "{": "\x01", "]": "\xff", "}": "\xff"})


class TooDeep(ValueError):
    """JSON nested deeper than ``MAX_JSON_DEPTH``."""


def nesting_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON ``text`` nest (0 for a scalar).

    Invalid JSON gets a figure too (its unclosed brackets count), never an error: the parser
    refuses it afterwards, and nothing deeper than the limit ever reaches the parser.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    openings = brackets.count("[") + brackets.count("{")
    if openings <= 1:
        return openings
    steps = array("b", brackets.translate(_STEPS).encode("latin-1"))
    # Closing brackets first (invalid) can make every running sum negative. The parser refuses
    # JSON at its first invalid character, and up to there the running sum is the depth it has
    # reached, so the largest sum bounds how deep it can go.
    return max(0, max(accumulate(steps)))


def loads(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads``, but ``TooDeep`` for a document nested deeper than ``max_depth``.

    ``ValueError`` (``TooDeep`` included) or ``UnicodeDecodeError`` for anything that is not
    JSON, as ``json.loads`` itself; bytes are decoded as it would decode them.
    """
    text = raw.decode(json.detect_encoding(raw), "surrogatepass") if isinstance(raw, bytes) else raw
    if nesting_depth(text) > max_depth:
        raise TooDeep(f"JSON may nest at most {max_depth} levels")
    return json.loads(text)
