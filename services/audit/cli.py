"""The auditor's command line: verify the ledger, stream it, rebuild a tenant as of a moment.

    python -m services.audit.cli verify [--resume]
    python -m services.audit.cli replay [--tenant ID] [--from TIME] [--to TIME] [--type T,...]
    python -m services.audit.cli state --tenant ID [--at TIME]

It reads the audit database named by the usual ``LEDGERDESK_*`` settings. ``verify`` runs the
verification job (``services.audit.verification``) and stores its result, which the verify
endpoints then report. Output is JSON on
stdout; a progress bar goes to stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from tqdm import tqdm

from kernel.config import Settings
from services.audit.ledger import open_ledger
from services.audit.state import tenant_state


def _moment(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time with its offset, e.g. 2026-11-01T00:00Z")
    return moment


def main(argv: list[str] | None = None, out=None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="python -m services.audit.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify", help="recompute the hash chain and the signed checkpoints, from the first entry"
    )
    verify.add_argument(
        "--resume",
        action="store_true",
        help="start where the last intact run ended (what the service's timer does)",
    )
    replay = commands.add_parser("replay", help="stream ledger entries as JSON lines")
    replay.add_argument("--tenant")
    replay.add_argument("--from", dest="since", type=_moment)
    replay.add_argument("--to", dest="until", type=_moment)
    replay.add_argument("--type", help="comma-separated event types")
    state = commands.add_parser("state", help="a tenant's state as of a moment, as JSON")
    state.add_argument("--tenant", required=True)
    state.add_argument("--at", type=_moment, help="default: now")
    args = parser.parse_args(argv)

    ledger = open_ledger(Settings.from_env())
    if args.command == "verify":
        result = ledger.verify(from_zero=not args.resume)
        json.dump(result, out, indent=2)
        out.write("\n")
        return 0 if result["ok"] else 1
    show = sys.stderr.isatty()
    if args.command == "replay":
        entries = ledger.iter_entries(
            args.tenant,
            types=args.type.split(",") if args.type else None,
            since=args.since,
            until=args.until,
        )
        for entry in tqdm(entries, total=ledger.count(), unit="entry", disable=not show):
            out.write(json.dumps(entry) + "\n")
        return 0
    entries = ledger.iter_entries(args.tenant, until=args.at)
    rebuilt = tenant_state(tqdm(entries, unit="entry", disable=not show))
    json.dump({"as_of": (args.at or dt.datetime.now(dt.UTC)).isoformat(), **rebuilt}, out, indent=2)
    out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
