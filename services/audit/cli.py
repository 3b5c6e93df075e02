"""The auditor's command line: verify the ledger, stream it, rebuild a tenant as of a moment,
export it for offline verification, and verify such an export offline.

    ledgerdesk-audit verify [--resume]
    ledgerdesk-audit verify-logs [--tenant ID]
    ledgerdesk-audit checkpoint-logs
    ledgerdesk-audit replay [--tenant ID] [--from TIME] [--to TIME] [--type T,...]
    ledgerdesk-audit state --tenant ID [--at TIME]
    ledgerdesk-audit export PATH
    ledgerdesk-audit offline EXPORT --keys KEYS [...]   (services.audit.offline_verify)

``ledgerdesk-audit`` is the installed command (pyproject's ``[project.scripts]``);
``python -m services.audit.cli`` is the same.

``export`` signs a checkpoint of the ledger as it stands (with the audit service's signing key,
as its timer would), then writes JSON lines (a header, every signed checkpoint, the entries up to
the newest checkpoint's tree size, all from one snapshot) to PATH, or to ``audit-export.jsonl``
in PATH when it is a folder; ``services.audit.offline_verify`` checks it with the public keys
alone. Every entry it writes is covered by a signature: entries recorded after that checkpoint
wait for the next export.

It reads the audit database named by the usual ``LEDGERDESK_*`` settings. ``verify`` runs the
verification job (``services.audit.verification``) and stores its result, which the verify
endpoints then report. Output is JSON on
stdout; a progress bar goes to stderr when it is a terminal, its total the number of entries
the walk will read, counted in the walk's own snapshot.

``verify-logs`` verifies the per-tenant logs (``services.audit.tenant_logs``): one tenant's
(``--tenant``, the nil uuid for platform entries) reading that log's entries alone, or every log,
every platform checkpoint and the frozen single chain they commit to. ``checkpoint-logs`` signs a
platform checkpoint over every log's head now (the first one after the migration is what
commits to the frozen chain).

Exit status (``kernel.cli``): 0 verified or done; 1 tampered (``verify`` or ``verify-logs``
found a break, or
``offline`` refused the export); 2 usage or configuration (``offline``: an input missing or
malformed); 3 the audit database is unreachable.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import uuid
from pathlib import Path

from tqdm import tqdm

from kernel import cli
from kernel.config import Settings
from services.audit import offline_verify
from services.audit.ledger import open_ledger
from services.audit.offline_verify import EXPORT_FILE
from services.audit.state import tenant_state


def _moment(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time with its offset, e.g. 2026-11-01T00:00Z")
    return moment


def main(argv: list[str] | None = None, out=None) -> int:
    out = out or sys.stdout
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["offline"]:
        # Its own parser and exit codes (the same ones): it runs with no settings at all.
        return offline_verify.main(argv[1:], out=out, prog="ledgerdesk-audit offline")
    parser = argparse.ArgumentParser(
        prog="ledgerdesk-audit",
        description="Verify, replay and export the audit ledger (JSON on stdout).",
        epilog=cli.EXIT_CODES_HELP,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify", help="recompute the hash chain and the signed checkpoints, from the first entry"
    )
    verify.add_argument(
        "--resume",
        action="store_true",
        help="start where the last intact run ended (what the service's timer does)",
    )
    verify_logs = commands.add_parser(
        "verify-logs",
        help="verify the per-tenant logs and platform checkpoints (one tenant's with --tenant)",
    )
    verify_logs.add_argument("--tenant", type=uuid.UUID, help="that tenant's log alone")
    commands.add_parser(
        "checkpoint-logs", help="sign a platform checkpoint over every tenant log's head now"
    )
    export_log = commands.add_parser(
        "export-log", help="write one tenant's log and its signed heads for the offline verifier"
    )
    export_log.add_argument("path", help="a file, or a folder to write tenant-log-<id>.jsonl in")
    export_log.add_argument("--tenant", type=uuid.UUID, required=True)
    replay = commands.add_parser("replay", help="stream ledger entries as JSON lines")
    replay.add_argument("--tenant")
    replay.add_argument("--from", dest="since", type=_moment)
    replay.add_argument("--to", dest="until", type=_moment)
    replay.add_argument("--type", help="comma-separated event types")
    state = commands.add_parser("state", help="a tenant's state as of a moment, as JSON")
    state.add_argument("--tenant", required=True)
    state.add_argument("--at", type=_moment, help="default: now")
    export = commands.add_parser("export", help="write the ledger for the offline verifier")
    export.add_argument("path", help="a file, or a folder to write audit-export.jsonl in")
    commands.add_parser(
        "offline",
        help="verify an export with the public keys alone, no database (offline --help: how)",
        add_help=False,
    )
    args = parser.parse_args(argv)
    return cli.guarded(lambda: _run(args, out))


def _run(args: argparse.Namespace, out) -> int:
    ledger = open_ledger(Settings.from_env(service="audit"))
    if args.command == "verify":
        with cli.bar("entry", "verify") as progress:
            result = ledger.verify(from_zero=not args.resume, progress=progress)
        json.dump(result, out, indent=2)
        out.write("\n")
        if not result["ok"]:
            print(
                f"TAMPERED: first bad seq {result['first_bad_seq']}"
                f" (first bad node seq {result['first_bad_node_seq']})",
                file=sys.stderr,
            )
            return cli.Exit.FAILED
        return cli.Exit.OK
    if args.command == "verify-logs":
        if args.tenant is not None:
            result = ledger.logs.verify_log(args.tenant)
        else:
            result = ledger.logs.verify_platform()
        json.dump(result, out, indent=2)
        out.write("\n")
        if not result["ok"]:
            print("TAMPERED: see the report on stdout", file=sys.stderr)
            return cli.Exit.FAILED
        return cli.Exit.OK
    if args.command == "export-log":
        target = Path(args.path)
        if target.is_dir():
            target = target / f"tenant-log-{args.tenant}.jsonl"
        partial = target.with_name(target.name + ".partial")
        # Signed first, so that the export reaches the log's head.
        ledger.logs.checkpoint()
        counts = {"entry": 0, "head": 0}
        with partial.open("w", encoding="utf-8") as file:
            for record in ledger.logs.export(args.tenant):
                if record.get("type") in counts:
                    counts[record["type"]] += 1
                file.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(partial, target)
        summary = {"path": str(target), "entries": counts["entry"], "heads": counts["head"]}
        json.dump(summary, out)
        out.write("\n")
        return cli.Exit.OK
    if args.command == "checkpoint-logs":
        json.dump(ledger.logs.checkpoint(), out, indent=2)
        out.write("\n")
        return cli.Exit.OK
    show = cli.shown()
    if args.command == "export":
        target = Path(args.path)
        if target.is_dir():
            target = target / EXPORT_FILE
        # Written beside and renamed into place: a reader never sees half an export.
        partial = target.with_name(target.name + ".partial")
        # A hash chain has no key: the entries past the newest checkpoint would prove nothing,
        # so one is signed now and the export stops at the newest checkpoint.
        ledger.checkpoint()
        written = {"entry": 0, "checkpoint": 0}
        covered_until = 0
        with partial.open("w", encoding="utf-8") as file:
            for record in tqdm(ledger.export(), unit="line", disable=not show):
                if record.get("type") in written:
                    written[record["type"]] += 1
                elif "format" in record:
                    covered_until = record["tree_size"]
                file.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(partial, target)
        summary = {
            "path": str(target),
            "entries": written["entry"],
            "checkpoints": written["checkpoint"],
            # The newest checkpoint's tree size: the export holds no entry after it.
            "covered_until": covered_until,
        }
        json.dump(summary, out)
        out.write("\n")
        print(
            f"exported {written['entry']} entries, up to the newest signed checkpoint"
            f" (tree size {covered_until}); entries recorded after it wait for the next export",
            file=sys.stderr,
        )
        return 0
    if args.command == "replay":
        entries = ledger.iter_entries(
            args.tenant,
            types=args.type.split(",") if args.type else None,
            since=args.since,
            until=args.until,
        )
        filtered = args.tenant or args.type or args.since or args.until
        # A total only when it is the ledger's count: a filtered replay's is not known up front,
        # and a bar that claimed one would stop short.
        total = None if filtered or not show else ledger.count()
        for entry in tqdm(entries, total=total, unit="entry", disable=not show):
            out.write(json.dumps(entry) + "\n")
        return 0
    entries = ledger.iter_entries(args.tenant, until=args.at)
    rebuilt = tenant_state(tqdm(entries, unit="entry", disable=not show))
    json.dump({"as_of": (args.at or dt.datetime.now(dt.UTC)).isoformat(), **rebuilt}, out, indent=2)
    out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
