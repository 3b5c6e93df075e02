"""The console in a real browser (Debian's headless Chromium, driven by selenium) against the
whole platform running as processes: what an admin, an auditor, an agent and the operator see,
and that no key, token or personal value reaches a URL, a server log or the browser console.

Each test saves screenshots of the views it walks through: to docs/console/ (the README's) with
``make screenshots``, otherwise to a scratch folder so a test run leaves the tree as it was.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from selenium import webdriver
from selenium.common.exceptions import ElementNotInteractableException as NotInteractable
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select

from kernel.mail import sink
from kernel.testing import Infrastructure, free_port, make_world, wait_until, world_env
from services import platform
from tests.e2e.conftest import Stack

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = Path(
    os.environ.get("LEDGERDESK_SCREENSHOT_DIR")
    or Path(tempfile.gettempdir()) / "ledgerdesk-console-screenshots"
)
ADMIN_VIEWS = [
    "Privacy requests",
    "Search",
    "Ledger",
    "Tenant",
    "Retention",
    "Mail",
    "Incidents",
]

# Made-up people: the values that must never appear in a URL, a log line or the console.
TENANT = {
    "company": "Example Support Ltd",
    "region": "uk",
    "admin": {"name": "Dana Example", "email": "dana.example@example.com"},
    "age_confirmed": True,
    "accept_policy_version": "2026-01",
}
CAROL = {"name": "Carol Example", "email": "carol.example@example.com"}


def _browser(downloads: Path) -> WebDriver:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        message = f"the console tests need Debian's chromium and chromium-driver: no {missing}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    # Both paths explicit, so Selenium Manager never tries to download a browser or a driver.
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


@dataclass
class Console:
    stack: Stack
    driver: WebDriver
    log: Path
    downloads: Path
    admin: dict[str, Any]
    agent_key: str
    auditor_key: str
    smtp: sink.Sink
    secrets: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    @property
    def admin_key(self) -> str:
        return self.admin["api_key"]

    @property
    def operator_token(self) -> str:
        return self.stack.settings.operator_token

    def api(self, method: str, path: str, key: str, **kwargs: Any) -> Any:
        response = self.stack.call(method, path, key=key, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()

    def contact(self) -> str:
        """A new contact, Carol; the console shows her by id only."""
        return self.api("POST", "/v1/contacts", self.admin_key, json=CAROL)["id"]

    # --- the browser ------------------------------------------------------------------------

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def first(self, css: str) -> WebElement | None:
        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found else None

    def text(self, css: str) -> str:
        try:
            return self.find(css).text
        except (StaleElementReferenceException, NoSuchElementException):  # redrawn: read again
            return ""

    def seen(self) -> None:
        self.urls.append(self.driver.current_url)

    def sign_in(self, secret: str, mode: str = "key", expect_console: bool = True) -> None:
        self.driver.get(f"{self.stack.url}/console")
        self.driver.execute_script("sessionStorage.clear()")
        self.driver.get(f"{self.stack.url}/console")
        wait_until(lambda: self.find("#sign-in").is_displayed(), what="the sign-in form")
        self.find(f'input[name="mode"][value="{mode}"]').click()
        self.find("#secret").send_keys(secret)
        self.find('#sign-in-form button[type="submit"]').click()
        if expect_console:
            wait_until(
                lambda: self.find("#console").is_displayed() or self.text("#sign-in-error"),
                what="the console",
            )
            assert self.find("#console").is_displayed(), self.text("#sign-in-error")
        self.seen()

    def tabs(self) -> list[str]:
        try:
            return [t.text for t in self.driver.find_elements(By.CSS_SELECTOR, '[role="tab"]')]
        except StaleElementReferenceException:  # redrawn while read: the next look sees it
            return []

    def open(self, view: str) -> None:
        self.find(f"#tab-{view}").click()
        wait_until(lambda: self.find(f"#panel-{view}").is_displayed(), what=f"the {view} view")
        self.seen()

    def shot(self, name: str, css: str | None = None) -> None:
        if css:
            self.driver.execute_script(
                "arguments[0].scrollIntoView({block: 'start'})", self.find(css)
            )
        SHOTS.mkdir(parents=True, exist_ok=True)
        assert self.driver.save_screenshot(str(SHOTS / f"{name}.png"))

    def assert_nothing_leaked(self) -> None:
        """No key, token or personal value in a page URL, the services' logs or the console."""
        self.seen()
        entries = self.driver.get_log("browser")
        # Refused calls (401, 404) are logged by the browser as network errors, as they should
        # be; anything else severe is the page's own fault: a script error, a CSP violation.
        assert [e for e in entries if e["level"] == "SEVERE" and e["source"] != "network"] == []
        console = json.dumps(entries)
        logs = self.log.read_text(errors="replace")
        # The log does hold the gateway's lines, so a clean log means something.
        assert "GET /console -> 200" in logs
        for secret in self.secrets:
            for url in self.urls:
                assert secret not in url
            assert secret not in logs
            assert secret not in console


@pytest.fixture(scope="module")
def console(infrastructure: Infrastructure, tmp_path_factory) -> Iterator[Console]:
    folder = tmp_path_factory.mktemp("console")
    log = folder / "services.log"
    downloads = folder / "downloads"
    downloads.mkdir()
    driver = _browser(downloads)
    port = free_port()
    try:
        with (
            sink.running() as smtp,
            make_world(
                infrastructure,
                LEDGERDESK_GATEWAY_PORT=str(port),
                LEDGERDESK_GATEWAY_PROCESSES="1",
                # A proof waits for a checkpoint that covers its entry (none is signed on demand).
                LEDGERDESK_CHECKPOINT_SECONDS="5",
                # Replies are mailed to a real SMTP server, which refuses what a test tells it to.
                LEDGERDESK_SMTP_HOST="127.0.0.1",
                LEDGERDESK_SMTP_PORT=str(smtp.port),
            ) as settings,
            log.open("wb") as out,
        ):
            platform.prepare(settings)
            # As platform.start_processes, but with every process's output kept for the checks.
            processes = {
                name: subprocess.Popen(
                    [sys.executable, "-m", "kernel.runner", path],
                    cwd=platform.ROOT,
                    start_new_session=True,
                    env=world_env(settings),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
                for name, path in {**platform.SERVICES, "gateway-1": platform.GATEWAY}.items()
            }
            url = f"http://127.0.0.1:{port}"
            try:
                assert platform.wait_until_ready(url, processes, timeout=60), "no stack"
                stack = Stack(settings, url, processes)
                admin = stack.sign_up(**TENANT)
                agents, people = {}, []
                for role, name in (("agent", "Eli Example"), ("auditor", "Fay Example")):
                    person = {"name": name, "email": f"{name.split()[0].lower()}@example.com"}
                    response = stack.call(
                        "POST", "/v1/agents", key=admin["api_key"], json={**person, "role": role}
                    )
                    assert response.status_code == 201, response.text
                    agents[role] = response.json()["api_key"]
                    people += person.values()
                yield Console(
                    stack,
                    driver,
                    log,
                    downloads,
                    admin,
                    agents["agent"],
                    agents["auditor"],
                    smtp.handler,
                    secrets=[
                        admin["api_key"],
                        agents["agent"],
                        agents["auditor"],
                        settings.operator_token,
                        TENANT["admin"]["name"],
                        TENANT["admin"]["email"],
                        CAROL["name"],
                        CAROL["email"],
                        *people,
                    ],
                )
            finally:
                # The browser first: its open connections would hold the gateway's stop up.
                driver.quit()
                platform.stop_processes(processes)
    except BaseException:
        driver.quit()
        raise


def _request_row(console: Console, subject_id: str) -> WebElement | None:
    for row in console.driver.find_elements(By.CSS_SELECTOR, "#requests tbody tr"):
        try:
            if subject_id in row.text:
                return row
        except StaleElementReferenceException:
            return None
    return None


def _completed(console: Console, subject_id: str) -> WebElement | None:
    row = _request_row(console, subject_id)
    try:
        return row if row is not None and row.get_attribute("data-status") == "completed" else None
    except StaleElementReferenceException:
        return None


def _file(console: Console, kind: str, subject: str) -> None:
    Select(console.find("#request-type")).select_by_value(kind)
    Select(console.find("#subject-kind")).select_by_value("contact_id")
    console.find("#subject-id").send_keys(subject)
    console.find('#file-request button[type="submit"]').click()
    wait_until(lambda: _request_row(console, subject), what=f"the {kind} request on the board")


def _downloaded(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # not there yet, or still being written
        return None


def test_an_admin_files_an_erasure_watches_it_complete_and_verifies_the_receipt(console):
    carol, other = console.contact(), console.contact()
    console.sign_in(console.admin_key)
    assert console.tabs() == ADMIN_VIEWS
    console.open("privacy")
    _file(console, "access", other)
    _file(console, "erasure", carol)
    # The board refreshes by itself while the requests run: nobody reloads the page here.
    row, access = wait_until(
        lambda: (r := _completed(console, carol)) and (a := _completed(console, other)) and (r, a),
        what="both requests to complete",
    )
    answers = [li.text for li in row.find_elements(By.CSS_SELECTOR, ".answers li")]
    assert {a.split(":")[0] for a in answers} >= {"accounts", "tickets", "billing", "audit"}
    assert all(a.split(": ")[1].startswith(("done", "retained")) for a in answers), answers
    console.seen()
    console.shot("privacy-requests")

    access.find_element(By.XPATH, ".//button[text()='Download export']").click()
    target = console.downloads / f"export-{access.get_attribute('data-request')}.json"
    export = wait_until(lambda: _downloaded(target), what="the downloaded export")
    assert CAROL["email"] in json.dumps(export)  # the subject's own data, from the services

    row.find_element(By.XPATH, ".//button[text()='Receipt']").click()
    wait_until(lambda: console.find("#receipt").is_displayed(), what="the receipt")
    console.find("#verify-receipt").click()
    result = wait_until(
        lambda: "Signature" in console.text("#receipt-result") and console.find("#receipt-result"),
        what="the receipt's verification",
    )
    assert result.text.startswith("Signature valid: signed by this platform's audit key")
    assert "ok" in result.get_attribute("class").split()
    console.shot("erasure-receipt", "#receipt")

    # The same check on a receipt whose content was changed after signing must fail.
    receipt = json.loads(console.find("#receipt-json").get_attribute("textContent"))
    assert receipt["subject"] == {"contact_id": carol}
    tampered = {**receipt, "completed_at": "2020-01-01T00:00:00+00:00"}
    console.open("ledger")
    for document, verdict in ((tampered, "Signature invalid"), (receipt, "Signature valid")):
        box = console.find("#receipt-text")
        box.clear()
        box.send_keys(json.dumps(document))
        console.find('#check-receipt button[type="submit"]').click()
        wait_until(
            lambda verdict=verdict: console.text("#check-result").startswith(verdict),
            what=verdict,
        )
    console.assert_nothing_leaked()


def _status(console: Console, subject_id: str) -> str | None:
    row = _request_row(console, subject_id)
    try:
        return row.get_attribute("data-status") if row is not None else None
    except StaleElementReferenceException:
        return None


def test_a_second_admin_approves_and_denies_requests_that_wait_for_approval(console):
    hal = console.api(
        "POST",
        "/v1/agents",
        console.admin_key,
        json={"name": "Hal Example", "email": "hal.example@example.com", "role": "admin"},
    )
    console.secrets += [hal["api_key"], "Hal Example", "hal.example@example.com"]
    # Hal's first key was made by the admin, who saw it: the page offers him a key of his own,
    # and only that one counts as a second pair of eyes on the admin's requests.
    console.sign_in(hal["api_key"])
    wait_until(lambda: console.find("#claim").is_displayed(), what="the offer to claim a key")
    console.find("#claim-key").click()
    wait_until(lambda: console.find("#claimed").is_displayed(), what="the claimed key")
    own = console.find("#claimed-key").get_attribute("value")
    console.secrets.append(own)
    assert not console.find("#claim-key").is_displayed()
    assert console.stack.call("GET", "/v1/me", key=hal["api_key"]).status_code == 401
    assert console.api("GET", "/v1/me", own)["key_is_own"] is True
    policy = {"requires_approval": ["restriction"]}
    console.api("PUT", "/v1/privacy/approval-policy", console.admin_key, json=policy)
    approved, denied = console.contact(), console.contact()
    for subject in (approved, denied):
        filed = console.api(
            "POST",
            "/v1/privacy/requests",
            console.admin_key,
            json={"type": "restriction", "subject": {"contact_id": subject}},
        )
        assert filed["status"] == "awaiting_approval"

    console.open("privacy")
    decisions = (
        (approved, "Approve", "Identity checked on a call back", "completed"),
        (denied, "Deny", "Not the account holder", "denied"),
    )
    for subject, button, reason, status in decisions:
        assert wait_until(lambda s=subject: _status(console, s)) == "awaiting_approval"

        def decide(subject: str = subject, button: str = button, reason: str = reason) -> bool:
            # The board redraws while the first decision's request runs: a redrawn row is
            # found again and the reason typed afresh.
            row = _request_row(console, subject)
            try:
                box = row.find_element(By.CSS_SELECTOR, "input")
                box.clear()
                box.send_keys(reason)
                row.find_element(By.XPATH, f".//button[text()='{button}']").click()
                return True
            except (AttributeError, StaleElementReferenceException, NotInteractable):
                return False

        wait_until(decide, what=f"a {button.lower()} click")
        wait_until(
            lambda s=subject, st=status: _status(console, s) == st, what=f"the request {status}"
        )
        assert reason in _request_row(console, subject).text
    console.shot("privacy-approvals")
    console.assert_nothing_leaked()


def _entry_rows(console: Console) -> list[tuple[str, str]]:
    try:
        return [
            (row.get_attribute("data-type"), row.find_elements(By.TAG_NAME, "td")[5].text)
            for row in console.driver.find_elements(By.CSS_SELECTOR, "#entries tbody tr")
        ]
    except StaleElementReferenceException:
        return []


def _filter(console: Console, type_: str, subject: str) -> None:
    for css, value in (("#filter-type", type_), ("#filter-subject", subject)):
        box = console.find(css)
        box.clear()
        box.send_keys(value)
    console.find('#ledger-filter button[type="submit"]').click()


def test_an_auditor_filters_the_ledger_sees_who_accessed_a_subject_and_checks_a_proof(console):
    carol = console.contact()
    console.api("GET", f"/v1/contacts/{carol}", console.agent_key)
    agent = console.api("GET", "/v1/me", console.agent_key)["agent_id"]

    def ledger_has_the_read() -> bool:
        page = console.api(
            "GET", f"/v1/audit/subjects/{carol}/entries?type=access_logged", console.auditor_key
        )
        return any(e["actor_id"] == agent for e in page["items"])

    wait_until(ledger_has_the_read, what="the read to reach the ledger")

    console.sign_in(console.auditor_key)
    assert console.tabs() == ["Ledger", "Tenant"]
    console.open("ledger")
    badge = wait_until(
        lambda: (
            console.text("#ledger-badge").startswith("Ledger ") and console.find("#ledger-badge")
        ),
        what="the verification badge",
    )
    assert badge.text.startswith("Ledger verified:"), badge.text

    _filter(console, "access_logged", carol)
    rows = wait_until(
        lambda: (r := _entry_rows(console)) and all(t == "access_logged" for t, _ in r) and r,
        what="the filtered entries",
    )
    assert all(carol in subjects for _, subjects in rows)
    _filter(console, "", carol)
    rows = wait_until(
        lambda: (r := _entry_rows(console)) and any(t != "access_logged" for t, _ in r) and r,
        what="every entry naming Carol",
    )
    assert all(carol in subjects for _, subjects in rows)

    # A time window: nothing is recorded after an hour from now; everything since an hour ago,
    # which is at least what was shown, since each read of Carol's entries is itself an access
    # record naming her (every id an answer shows is named).
    now = dt.datetime.now(dt.UTC)
    for start, enough in (
        (now + dt.timedelta(hours=1), lambda n: n == 0),
        (now - dt.timedelta(hours=1), lambda n: n >= len(rows)),
    ):
        console.driver.execute_script(
            "arguments[0].value = arguments[1]",
            console.find("#filter-from"),
            start.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        console.find('#ledger-filter button[type="submit"]').click()
        wait_until(
            lambda enough=enough: (
                (shown := re.fullmatch(r"(\d+) entries shown\.", console.text("#ledger-status")))
                and enough(int(shown.group(1)))
            ),
            what=f"the entries since {start:%H:%M}",
        )

    console.find("#who-accessed").click()
    wait_until(lambda: agent in console.text("#accessed-list"), what="who accessed Carol")

    console.find("#entries tbody tr button").click()
    wait_until(
        lambda: console.text("#proof-result").startswith("Included:"), timeout=60, what="the proof"
    )
    assert "ok" in console.find("#proof-result").get_attribute("class").split()
    console.seen()
    console.shot("ledger")
    console.assert_nothing_leaked()


def test_an_agent_key_cannot_open_the_operator_view_and_the_operator_token_can(console):
    console.sign_in(console.agent_key)
    assert console.tabs() == ["Search", "Tenant"]
    console.driver.get(f"{console.stack.url}/console#operations")
    wait_until(lambda: "needs the operator token" in console.text("#notice"), what="a refusal")
    assert not console.find("#panel-operations").is_displayed()
    assert console.find("#panel-search").is_displayed()
    console.shot("agent-refused-operations")

    # Nor does an agent key pass for the operator token.
    console.sign_in(console.agent_key, mode="operator", expect_console=False)
    wait_until(lambda: "not valid" in console.text("#sign-in-error"), what="the refused sign-in")
    assert not console.find("#console").is_displayed()

    # A message no service can read: the audit ledger's queue dead-letters it at once.
    with Connection(console.stack.settings.amqp_uri) as connection:
        connection.Producer().publish(
            b'{"not": "an envelope"}',
            exchange="ledgerdesk.events",
            routing_key="tickets.console_test",
            content_type="application/json",
            message_id="console-poison-1",
        )

    def dead() -> list[dict[str, Any]]:
        listed = console.api("GET", "/v1/operator/dead-letters", console.operator_token)
        return [d for d in listed["items"] if d["message_id"] == "console-poison-1"]

    queue = wait_until(dead, what="the dead letter")[0]["queue"]

    console.sign_in(console.operator_token, mode="operator")
    assert console.tabs() == ["Operations"]
    wait_until(lambda: console.text('#services tr[data-service="retention"]'), what="the services")
    rows = {
        row.get_attribute("data-service"): row.text
        for row in console.driver.find_elements(By.CSS_SELECTOR, "#services tbody tr")
    }
    assert set(platform.SERVICES) <= set(rows)
    assert "access_log" in rows["audit"]
    assert "true" in rows["audit"]  # ready, as the operator's health answer says
    wait_until(lambda: "console-poison-1" in console.text("#dead-letters"), what="its row")
    console.shot("operations")
    console.find(f'#dead-letters button[aria-label="Replay the dead letters of {queue}"]').click()
    wait_until(
        lambda: console.text("#dead-status").startswith("Replayed 1 message(s)"),
        what="the replay",
    )
    console.find("#sign-out").click()
    wait_until(lambda: console.find("#sign-in").is_displayed(), what="the sign-in form")
    assert console.driver.execute_script("return sessionStorage.length") == 0
    console.assert_nothing_leaked()


def test_an_agent_finds_tickets_by_a_word_and_the_word_goes_nowhere(console):
    # A word of this test's own, so only its tickets match; kept out of URLs, logs and the
    # browser's console like any personal value.
    word = "zephyrine" + "".join(chr(ord("a") + int(c)) for c in str(id(console))[-4:])
    console.secrets.append(word)
    carol = console.contact()
    made = [
        console.api(
            "POST",
            "/v1/tickets",
            console.admin_key,
            json={"subject": f"{word} order", "body": body, "requester_id": carol},
        )["id"]
        for body in (f"the {word} parcel", "nothing to see")
    ]
    console.sign_in(console.agent_key)
    console.open("search")
    # Prefixes find the words: the ticket with both words first, then the one with one.
    console.find("#search-q").send_keys(f"{word[:4]} parc" + Keys.ENTER)
    wait_until(lambda: "found" in console.text("#search-status"), what="the results")
    rows = console.driver.find_elements(By.CSS_SELECTOR, "#search-results tbody tr")
    assert [row.get_attribute("data-ticket") for row in rows] == made
    assert [row.find_elements(By.TAG_NAME, "td")[3].text for row in rows] == ["2", "1"]
    console.shot("search")
    console.find("#sign-out").click()
    wait_until(lambda: console.find("#sign-in").is_displayed(), what="the sign-in form")
    assert console.find("#search-q").get_attribute("value") == ""
    assert console.driver.find_elements(By.CSS_SELECTOR, "#search-results tbody tr") == []
    console.assert_nothing_leaked()


def test_a_revoked_key_signs_the_page_out(console):
    me = console.api("GET", "/v1/me", console.agent_key)
    issued = console.api("POST", f"/v1/agents/{me['agent_id']}/api-keys", console.admin_key)
    console.secrets.append(issued["api_key"])
    console.sign_in(issued["api_key"])
    revoked = console.stack.call(
        "DELETE", f"/v1/agents/{me['agent_id']}/api-keys/{issued['id']}", key=console.admin_key
    )
    assert revoked.status_code == 204, revoked.text
    console.find("#tab-tenant").click()
    wait_until(lambda: "no longer valid" in console.text("#notice"), what="the sign-out")
    assert console.find("#sign-in").is_displayed()
    assert console.driver.execute_script("return sessionStorage.length") == 0
    console.assert_nothing_leaked()


def test_a_cancelled_tenant_counts_down_its_grace_and_is_reactivated_from_the_page(console):
    other = console.stack.sign_up(
        **{
            **TENANT,
            "company": "Globex Example Ltd",
            "admin": {"name": "Gus Example", "email": "gus.example@example.com"},
        }
    )
    console.secrets += [other["api_key"], "Gus Example", "gus.example@example.com"]
    console.api("DELETE", "/v1/tenant", other["api_key"])

    console.sign_in(other["api_key"])
    assert console.tabs() == ["Tenant"]
    wait_until(lambda: "left of the grace period" in console.text("#grace"), what="the countdown")
    assert "cancelled" in console.text("#tenant-facts")
    console.shot("tenant-grace")
    console.find("#reactivate").click()
    wait_until(lambda: console.tabs() == ADMIN_VIEWS, what="the admin's views after reactivation")
    wait_until(lambda: "active" in console.text("#tenant-facts"), what="the active tenant")
    assert console.api("GET", "/v1/tenant", other["api_key"])["status"] == "active"
    console.assert_nothing_leaked()


def test_an_admin_edits_a_retention_policy(console):
    console.sign_in(console.admin_key)
    console.open("retention")
    row = wait_until(lambda: console.first("#policies tbody tr"), what="the policies")
    category = row.get_attribute("data-category")
    box = row.find_element(By.TAG_NAME, "input")
    days = int(box.get_attribute("value")) + 7
    box.clear()
    box.send_keys(str(days))
    row.find_element(By.TAG_NAME, "button").click()
    wait_until(lambda: console.text("#retention-status").startswith("Saved"), what="the save")
    policies = console.api("GET", "/v1/retention/policies", console.admin_key)["items"]
    saved = next(p for p in policies if p["category"] == category)
    assert saved["days"] == days and saved["overridden"]
    assert "own" in console.find(f'#policies tr[data-category="{category}"]').text
    console.shot("retention")
    console.assert_nothing_leaked()


def test_an_admin_sees_the_mail_that_failed_by_ids(console):
    carol = console.contact()
    ticket = console.api(
        "POST",
        "/v1/tickets",
        console.admin_key,
        json={"subject": "Parcel", "body": "where is it", "requester_id": carol},
    )
    console.smtp.refusals[CAROL["email"]] = deque(["550 5.1.1 no such mailbox"])
    path = f"/v1/tickets/{ticket['id']}/messages"
    bounced = console.api("POST", path, console.admin_key, json={"body": "On its way"})["id"]
    wait_until(
        lambda: console.api("GET", "/v1/mail?status=failed", console.admin_key)["items"],
        timeout=30,
        what="the refused reply recorded as failed",
    )
    console.sign_in(console.admin_key)
    console.open("mail")
    row = f'#failed-mail tr[data-reference="{bounced}"]'
    wait_until(lambda: console.first(row), what="the failed mail in the view")
    assert carol in console.text(row) and "550 permanent" in console.text(row)
    console.shot("mail")


def test_an_admin_sees_a_breach_notice_with_its_clock_and_acknowledges_it(console):
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    notices = {}
    for hours in (2, 80):  # one clock still running, one whose 72 hours have passed
        description = f"Example breach notice, known for {hours} hours"
        console.secrets.append(description)
        body = {
            "tenant_ids": [console.admin["tenant"]["id"]],
            "categories": ["contact_details"],
            "description": description,
            "aware_at": (now - dt.timedelta(hours=hours)).isoformat(),
        }
        incident = console.api("POST", "/v1/operator/incidents", console.operator_token, json=body)
        notices[hours] = incident["id"]

    console.sign_in(console.admin_key)
    console.open("incidents")
    running, passed = (f'#incidents [data-incident="{notices[h]}"]' for h in (2, 80))
    wait_until(lambda: console.first(running) and console.first(passed), what="both notices")
    assert "left of the 72 hours" in console.text(f"{running} [role=timer]")
    assert "known for 2 hours" in console.text(running)
    assert console.text(f"{passed} [role=timer]").startswith("The 72 hours ended")
    console.shot("incidents")

    console.find(f"{running} button.acknowledge").click()
    wait_until(lambda: console.text("#incidents-status").startswith("Acknowledged"), what="the ack")
    wait_until(
        lambda: console.find(running).get_attribute("data-acknowledged") == "true",
        what="the notice marked acknowledged",
    )
    assert not console.find(f"{running} button.acknowledge").is_enabled()
    seen = console.api("GET", f"/v1/incidents/{notices[2]}", console.admin_key)
    assert [a["agent_id"] for a in seen["acknowledgements"]] == [console.admin["agent"]["id"]]
    assert console.find(f"{passed} button.acknowledge").is_enabled()
    console.assert_nothing_leaked()


# The contrast ratio of WCAG 2 for every element that shows text, against the first opaque
# background behind it.
CONTRAST = """
const lum = (rgb) => {
  const [r, g, b] = rgb.map((v) => {
    v /= 255;
    return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const parse = (c) => c.match(/[\\d.]+/g).map(Number);
const worst = [];
for (const node of document.querySelectorAll("body *")) {
  if (!node.offsetParent && node.tagName !== "BODY") continue;
  const own = [...node.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!own) continue;
  let bg = node, colour;
  while (bg) {
    colour = parse(getComputedStyle(bg).backgroundColor);
    if (colour.length < 4 || colour[3] > 0) break;
    bg = bg.parentElement;
  }
  const fg = parse(getComputedStyle(node).color);
  const [a, b] = [lum(fg), lum(bg ? colour : [255, 255, 255])].sort((x, y) => y - x);
  const ratio = (a + 0.05) / (b + 0.05);
  if (ratio < 4.5) worst.push(`${node.tagName}#${node.id}.${node.className}: ${ratio.toFixed(2)}`);
}
return worst;
"""

UNLABELLED = """
return [...document.querySelectorAll("input, select, textarea")]
  .filter((e) => e.offsetParent && !e.labels.length && !e.getAttribute("aria-label"))
  .map((e) => e.outerHTML);
"""


def test_the_console_is_labelled_keyboard_operable_and_legible(console):
    console.sign_in(console.admin_key)
    for view in ("privacy", "search", "ledger", "tenant", "retention", "mail", "incidents"):
        console.open(view)
        assert console.driver.execute_script(UNLABELLED) == [], view
        assert console.driver.execute_script(CONTRAST) == [], view

    # The tab list: arrow keys, Home and End move between views, and the focus goes along.
    console.find("#tab-incidents").send_keys(Keys.HOME)
    for key, view in (
        (Keys.ARROW_RIGHT, "search"),
        (Keys.END, "incidents"),
        (Keys.ARROW_RIGHT, "privacy"),
    ):
        console.driver.switch_to.active_element.send_keys(key)
        wait_until(lambda view=view: console.find(f"#panel-{view}").is_displayed(), what=view)
        active = console.driver.switch_to.active_element
        assert active.get_attribute("id") == f"tab-{view}"
        assert active.get_attribute("aria-selected") == "true"
        # and it shows where it is
        outline = console.driver.execute_script(
            "return getComputedStyle(document.activeElement).outlineStyle"
        )
        assert outline == "solid"
    console.find("#sign-out").click()
    wait_until(lambda: console.find("#sign-in").is_displayed(), what="the sign-in form")
    assert console.driver.execute_script(UNLABELLED) == []
    assert console.driver.execute_script(CONTRAST) == []
    console.shot("sign-in")
    console.assert_nothing_leaked()


def test_the_page_forbids_outside_assets_and_inline_script(console):
    response = console.stack.call("GET", "/console")
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert "<script>" not in response.text and " style=" not in response.text
    # Everything the page loads is the console's own.
    links = re.findall(r'(?:src|href)="([^"]*)"', response.text)
    assert links and all(link.startswith(("/console/", "#")) for link in links), links
    assert console.stack.call("GET", "/console/../service.py").status_code == 404
    assert console.stack.call("GET", "/console/secrets.txt").status_code == 404
