"""``make bench``: every section, one table, a JSON record and a chart.

    .venv/bin/python -m bench                      # everything (~10 minutes on 2 cores, +4 search)
    .venv/bin/python -m bench --quick              # smaller sizes, a smoke run
    .venv/bin/python -m bench --only eventstore,replay
    .venv/bin/python -m bench --only cards            # the card-number check, in process
    .venv/bin/python -m bench --only ledger           # verification and proofs at scale
    .venv/bin/python -m bench --only export           # a tenant's whole export at 100,000 tickets
    .venv/bin/python -m bench --only single,mix,revocation   # the request path's other rows
    .venv/bin/python -m bench --only search           # search against plain full text
    .venv/bin/python -m bench --only rpc              # RPC round trips (only when named)

Results go to ``bench/results/<date>.json`` and ``bench/results/<date>.png`` (``--out`` moves
them). Each section runs in worlds of its own (databases, vhost) that are dropped at the end;
the sections that need the whole platform share one stack of processes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    cards,
    erasure_stack,
    esappends,
    eventstore,
    export,
    ledger,
    replay,
    report,
    requestpath,
    rpc,
    scaleout,
    search,
    writepath,
)
from bench.harness import Context, Row, cores, infrastructure_from_env
from kernel.testing import Infrastructure

SECTIONS = (
    "write",
    "cost",
    "single",
    "mix",
    "revocation",
    "eventstore",
    "esappends",
    "fanout",
    "erasure",
    "replay",
    "scaleout",
    "cards",
    "ledger",
    "export",
    "search",
)
# Run only when named in --only: not part of ``make bench``'s table.
OPTIONAL = ("rpc",)
RESULTS = Path(__file__).resolve().parent / "results"


def _runners() -> list[tuple[set[str], Callable[[Context, set[str]], list[Row]]]]:
    # write, fanout and cost are measured in one load run, so they share a runner.
    return [
        ({"write", "fanout", "cost"}, writepath.run),
        ({"single", "mix", "revocation"}, requestpath.run),
        ({"eventstore"}, eventstore.run),
        ({"esappends"}, esappends.run),
        ({"erasure"}, erasure_stack.run),
        ({"replay"}, replay.run),
        ({"scaleout"}, scaleout.run),
        ({"cards"}, cards.run),
        ({"ledger"}, ledger.run),
        ({"export"}, export.run),
        ({"search"}, search.run),
        ({"rpc"}, rpc.run),
    ]


def _failure(exc: BaseException) -> str:
    """What failed, for the record: the exception and the project's innermost frame, with a
    path relative to the project (the full traceback goes to stderr, not into the record)."""
    root = Path(__file__).resolve().parent.parent
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if path.is_relative_to(root) and ".venv" not in path.parts:
            where = f"{path.relative_to(root)}:{frame.lineno}: "
    return where + "".join(traceback.format_exception_only(exc)).strip()


def _commit() -> str:
    """The commit measured, marked ``+changes`` when the working tree differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results are written")
    args = parser.parse_args(argv)
    chosen = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = chosen - set(SECTIONS) - set(OPTIONAL)
    if unknown:
        known = SECTIONS + OPTIONAL
        parser.error(f"unknown sections: {', '.join(sorted(unknown))} (known: {known})")

    record, rows = run(chosen, args.quick, args.out)
    print(report.table(rows))
    print(f"\nwritten: {record['json']} and {record['png']} ({record['seconds']} s)")
    return 1 if record["failures"] else 0


def run(
    chosen: set[str],
    quick: bool,
    out: Path = RESULTS,
    infrastructure: Infrastructure | None = None,
    runners: list[tuple[set[str], Callable[[Context, set[str]], list[Row]]]] | None = None,
) -> tuple[dict[str, Any], list[Row]]:
    """Run the chosen sections; write the record and return it (with where it went).
    ``runners`` stand in for the usual ones (``python -m bench.search`` at another size)."""
    rows: list[Row] = []
    failures: dict[str, str] = {}
    timings: dict[str, float] = {}
    started = time.perf_counter()
    ctx = Context(quick=quick, infrastructure=infrastructure or infrastructure_from_env())
    try:
        for names, runner in runners or _runners():
            wanted = names & chosen
            if not wanted:
                continue
            label = ",".join(sorted(wanted))
            print(f"running {label} ...", file=sys.stderr, flush=True)
            began = time.perf_counter()
            try:
                rows += runner(ctx, wanted)
            except Exception as exc:
                traceback.print_exc()
                failures[label] = _failure(exc)
            timings[label] = time.perf_counter() - began
            print(f"{label}: {timings[label]:.0f} s", file=sys.stderr, flush=True)
    finally:
        try:
            ctx.close()
        except Exception as exc:
            # A process that stops badly is worth knowing about, not worth losing the figures.
            traceback.print_exc()
            failures["teardown"] = _failure(exc)

    record: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "commit": _commit(),
        "sections": sorted(chosen),
        "machine": {
            "cores": cores(),
            "python": platform.python_version(),
            "system": f"{platform.system()} {platform.machine()}",
        },
        "seconds": round(time.perf_counter() - started, 1),
        "section_seconds": {k: round(v, 1) for k, v in timings.items()},
        "rows": [row.as_dict() for row in rows],
        "failures": failures,
    }
    json_path, png_path = report.write(record, rows, out)
    record.update(json=str(json_path), png=str(png_path))
    return record, rows


if __name__ == "__main__":
    sys.exit(main())
