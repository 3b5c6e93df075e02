"""200 concurrent clients for 60 s, writing and reading tickets: no 5xx other than 503, no answer
that never comes, no stuck workers afterwards, and every process's memory stable (resident set
at the start and the end are printed).
"""

from __future__ import annotations

import collections
import threading
import time
import urllib.parse

import pytest
import requests

from kernel.testing import wait_until
from tests.reliability.load import (
    assert_accepted_writes_kept,
    fast_stack,
    ready,
    rss_kib,
    ticket_writer,
)

pytestmark = pytest.mark.reliability

CLIENTS = 200
SECONDS = 60.0
# With 200 clients on a busy two-core machine an answer may queue for a while; one that takes
# longer than this is counted as a hang.
PATIENCE = 60.0


def stable(start_kib: int, end_kib: int) -> bool:
    """Memory is stable when it has not grown past half again plus 50 MB over the minute."""
    return end_kib < 1.5 * start_kib + 50 * 1024


@pytest.mark.timeout(400)
def test_two_hundred_clients_for_a_minute(infrastructure):
    # The default RPC timeout (10 s): a request waiting that long behind 200 others is a 503.
    with fast_stack(infrastructure, LEDGERDESK_RPC_TIMEOUT="10") as stack:
        tenant_id, key, contact_id = ticket_writer(stack)
        headers = {"Authorization": f"Bearer {key}"}
        statuses: collections.Counter = collections.Counter()
        accepted: list[str] = []
        hangs = 0
        lock = threading.Lock()
        stop_at = time.monotonic() + SECONDS

        def client(n: int) -> None:
            nonlocal hangs
            session = requests.Session()
            mine: list[str] = []
            turn = 0
            while time.monotonic() < stop_at:
                turn += 1
                try:
                    if turn % 3 == 1 or not mine:
                        body = {"subject": f"client {n} #{turn}", "body": "help"}
                        response = session.post(
                            f"{stack.url}/v1/tickets",
                            json={**body, "requester_id": contact_id},
                            headers=headers,
                            timeout=PATIENCE,
                        )
                        if response.status_code == 201:
                            mine.append(response.json()["id"])
                    elif turn % 3 == 2:
                        response = session.get(
                            f"{stack.url}/v1/tickets/{mine[-1]}", headers=headers, timeout=PATIENCE
                        )
                    else:
                        response = session.get(
                            f"{stack.url}/v1/tickets?limit=5", headers=headers, timeout=PATIENCE
                        )
                except requests.Timeout:
                    with lock:
                        hangs += 1
                    continue
                with lock:
                    statuses[response.status_code] += 1
            with lock:
                accepted.extend(mine)

        before = {name: rss_kib(p.pid) for name, p in stack.processes.items()}
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(SECONDS + PATIENCE + 30)
        assert not any(t.is_alive() for t in threads), "a client never got its answer"
        after = {name: rss_kib(p.pid) for name, p in stack.processes.items()}

        print(f"\n{CLIENTS} clients for {SECONDS:.0f} s: {dict(sorted(statuses.items()))}")
        print(f"hangs {hangs}, tickets accepted {len(accepted)}")
        for name in before:
            start, end = before[name] / 1024, after[name] / 1024
            print(f"  RSS {name:10} start {start:7.1f} MB  end {end:7.1f} MB")

        assert hangs == 0
        assert {s for s in statuses if s >= 500} <= {503}, statuses
        assert {s for s in statuses if s < 500} <= {200, 201}, statuses
        assert statuses[200] > 0 and statuses[201] > 0
        unstable = {n: (before[n], after[n]) for n in before if not stable(before[n], after[n])}
        assert not unstable, f"memory grew (KiB, start and end): {unstable}"

        # No stuck workers: once the crowd is gone every service answers at once again, and
        # no request is left waiting in a service's RPC queue.
        wait_until(lambda: ready(stack), timeout=60, what="readiness after the load")
        vhost = urllib.parse.quote(stack.settings.database_prefix, safe="")
        for service in ("accounts", "tickets"):
            wait_until(
                lambda s=service: (
                    infrastructure.management("GET", f"/api/queues/{vhost}/rpc-{s}").json()[
                        "messages"
                    ]
                    == 0
                ),
                timeout=60,
                interval=0.5,
                what=f"rpc-{service} to drain",
            )
        answer = stack.call("GET", "/v1/tickets?limit=1", key=key)
        assert answer.status_code == 200, answer.text
        assert_accepted_writes_kept(stack.settings, tenant_id, accepted)
