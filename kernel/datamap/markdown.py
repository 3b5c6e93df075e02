"""The data map as Markdown tables, for ``docs/data-map.md`` (``python -m services.datamap``)."""

from __future__ import annotations

from collections.abc import Iterable

from kernel.datamap.checks import event_field_classes
from kernel.datamap.model import Category, End, Field, Held, Queue, ServiceMap, Table


def _ends(ends: Iterable[End]) -> str:
    return "; ".join(e.describe() for e in ends) or "—"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_tables(title: str, tables: Iterable[Table]) -> list[str]:
    lines = [f"#### {title}", ""]
    for table in tables:
        lines += [
            f"**`{table.name}`**: {_cell(table.holds)}. Rows end: {_cell(_ends(table.ends))}.",
            "",
        ]
        lines += ["| column | holds | how | ends | note |", "| --- | --- | --- | --- | --- |"]
        for c in table.columns:
            lines.append(
                f"| `{c.name}` | {c.category.value} | {c.held.value} | {_cell(_ends(c.ends))}"
                f" | {_cell(c.note)} |"
            )
        lines.append("")
    return lines


def render_events(service_map: ServiceMap) -> list[str]:
    rows = []
    for registry in service_map.registries + service_map.messages:
        for event_type in registry.types():
            declared = service_map.event_fields.get(event_type.name, {})
            latest = event_type.latest
            for version, path, category, held in event_field_classes(event_type, declared):
                if version != latest:
                    continue
                note = declared[path].note if path in declared else ""
                published = "yes" if event_type.published else "no"
                if path.split(".", 1)[0] in event_type.withheld_fields:
                    published = "no (stripped)" if event_type.published else "no"
                elif category is Category.PERSONAL and held is not Held.PLAINTEXT:
                    # Sealed by the service itself (not by the kernel, which strips what it
                    # encrypts): the published copy carries the ciphertext.
                    published = "yes (sealed)" if event_type.published else "no"
                rows.append(
                    f"| `{event_type.name}` v{version} | `{path}` | "
                    f"{category.value if category else 'UNDECLARED'} | "
                    f"{held.value if held else ''} | {published} | {_cell(note)} |"
                )
    if not rows:
        return []
    return [
        "#### Event fields (latest versions)",
        "",
        "| event | field | holds | how | published | note |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]


def render_queues(title: str, queues: Iterable[Queue]) -> list[str]:
    lines = [
        f"#### {title}",
        "",
        "| queue | holds | category | how | ends |",
        "| --- | --- | --- | --- | --- |",
    ]
    for q in queues:
        lines.append(
            f"| `{q.pattern}` | {_cell(q.holds)} | {q.category.value} | {q.held.value} |"
            f" {_cell(_ends(q.ends))} |"
        )
    return lines + [""]


def render_fields(title: str, items: Iterable[Field]) -> list[str]:
    lines = [f"#### {title}", "", "| field | holds | category |", "| --- | --- | --- |"]
    lines += [f"| `{f.name}` | {_cell(f.holds)} | {f.category.value} |" for f in items]
    return lines + [""]
