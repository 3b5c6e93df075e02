"""What the dashboard's and the alert rules' PromQL may name, and how each metric must be read.

The platform's metrics are collected from the code, not listed here: every family its processes
register (each service's and the gateway's modules imported, so whatever they declare is in
``prometheus_client``'s registry) and every state gauge (``kernel.observability.STATE_GAUGES``).
RabbitMQ's are the few per-queue metrics of its Prometheus plugin (``rabbitmq_prometheus``) the
dashboard reads, named as the plugin's documentation names them.
"""

from __future__ import annotations

import functools
import importlib
import re

from prometheus_client import REGISTRY

from kernel.observability import STATE_GAUGES
from services.platform import GATEWAY, SERVICES

# rabbitmq_prometheus, "Queues" in its metrics list (deps/rabbitmq_prometheus/metrics.md of
# rabbitmq-server): per queue, labels vhost and queue, from the /metrics/per-object endpoint
# (or /metrics with prometheus.return_per_object_metrics = true).
RABBITMQ_METRICS = frozenset(
    {
        "rabbitmq_queue_messages_ready",  # Messages ready to be delivered to consumers
        "rabbitmq_queue_messages_unacked",  # delivered to consumers but not yet acknowledged
        "rabbitmq_queue_consumers",  # Consumers on a queue
    }
)

# The series a family of each type writes, by suffix.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


@functools.cache
def platform_metrics() -> frozenset[str]:
    """Every series name a process of the platform can write on its /metrics."""
    for path in (*SERVICES.values(), GATEWAY):
        importlib.import_module(path.partition(":")[0])
    names = {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in _SUFFIXES.get(family.type, ("",))
    }
    return frozenset(names | set(STATE_GAUGES))


# --- reading PromQL ---------------------------------------------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPINGS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# Not after a word character, a dot or a $: so not the exponent of 1e3, nor $__rate_interval.
_IDENTIFIER = re.compile(r"(?<![\w.:$])[A-Za-z_:][\w:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan"}
)
_TAKEN_WITH_MAX = re.compile(r"\bmax\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\(\s*$")
_TAKEN_AS_RATE = re.compile(r"\b(?:rate|irate|increase)\s*\(\s*$")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions (followed by
    an opening parenthesis), keywords, label names or values, ranges or template variables."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPINGS.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def misread(expr: str) -> list[str]:
    """What ``expr`` reads wrongly: a name the platform does not write (nor RabbitMQ's plugin),
    a state gauge not taken with ``max`` (every replica reports the same value: a sum counts it
    once per replica), a counter or histogram series not taken as a rate (it only grows)."""
    problems = []
    text = _STRINGS.sub('""', expr)
    for name in sorted(metric_names(expr)):
        if name not in platform_metrics() and name not in RABBITMQ_METRICS:
            problems.append(f"{name} is not a metric of the platform or of RabbitMQ's plugin")
            continue
        for match in re.finditer(rf"(?<![\w:]){re.escape(name)}(?![\w:])", text):
            before = text[: match.start()]
            if name in STATE_GAUGES and not _TAKEN_WITH_MAX.search(before):
                problems.append(f"{name} (the same in every replica) is not taken with max")
            if name.endswith(("_total", "_bucket")) and not _TAKEN_AS_RATE.search(before):
                problems.append(f"{name} (a counter) is not taken as a rate")
    return problems
