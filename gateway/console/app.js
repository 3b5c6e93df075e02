// The Ledgerdesk console: one ES module, no build step, nothing loaded from elsewhere.
//
// The key (or the operator token) lives in sessionStorage only and leaves the page only as the
// bearer header of calls to this gateway: never in a URL, never in a log line. Everything the
// API returns is written with textContent, never parsed as HTML.

const STORE = "ledgerdesk.console";
const FILED = "ledgerdesk.console.filed"; // ids of requests filed from this tab, for a list
const POLL_MS = 1500;

const VIEWS = {
  privacy: { title: "Privacy requests", roles: ["admin"], show: showPrivacy },
  search: { title: "Search", roles: ["admin", "agent"], show: showSearch },
  ledger: { title: "Ledger", roles: ["admin", "auditor"], show: showLedger },
  tenant: { title: "Tenant", roles: ["admin", "agent", "auditor"], show: showTenant },
  retention: { title: "Retention", roles: ["admin"], show: showRetention },
  mail: { title: "Mail", roles: ["admin"], show: showMail },
  incidents: { title: "Incidents", roles: ["admin"], show: showIncidents },
  operations: { title: "Operations", roles: ["operator"], show: showOperations },
};

const $ = (id) => document.getElementById(id);
let session = null; // {mode: "key"|"operator", secret, role, agent_id, tenant_id}
let timers = [];

// --- calling the API -------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (session) headers.Authorization = `Bearer ${session.secret}`;
  const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// An endpoint this gateway does not have yet answers 404 or 405 with no such route.
const unavailable = (error) => error instanceof ApiError && (error.status === 405 ||
  (error.status === 404 && /not found|no such route|requested URL/i.test(error.message)
    && !/no such (request|entry|subject)/i.test(error.message)));

// --- small DOM helpers -----------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function say(id, text, kind) {
  const node = $(id);
  node.textContent = text || "";
  node.classList.remove("ok", "bad");
  if (kind) node.classList.add(kind);
}

function facts(dl, pairs) {
  dl.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "—")]));
}

const day = (iso) => (iso ? iso.slice(0, 10) : "—");
const when = (iso) => (iso ? iso.replace("T", " ").replace(/(\.\d+)?(\+00:00|Z)$/, "") : "—");

function stopTimers() {
  for (const t of timers) clearInterval(t);
  timers = [];
}

// --- bytes, base64, signatures ---------------------------------------------------------------

const fromB64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
const fromHex = (hex) => Uint8Array.from(hex.match(/../g) || [], (h) => parseInt(h, 16));
const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const utf8 = (text) => new TextEncoder().encode(text);

// The receipt's signed bytes, as the platform makes them: JSON with sorted keys, no spaces.
export function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

async function ed25519Verify(publicKeyB64, signatureB64, message) {
  const key = await crypto.subtle.importKey("raw", fromB64(publicKeyB64), { name: "Ed25519" },
    false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, key, fromB64(signatureB64), message);
}

let platformKey = null;
async function auditKey() {
  if (!platformKey) platformKey = await call("GET", "/v1/audit/public-key");
  return platformKey;
}

// {ok, text}: whether the receipt is signed, over exactly its content, by this platform's key.
export async function verifyReceipt(receipt) {
  const signature = receipt && receipt.signature;
  if (!signature || signature.algorithm !== "Ed25519" || !signature.value || !signature.public_key) {
    return { ok: false, text: "Not a signed receipt: no Ed25519 signature in it." };
  }
  const body = { ...receipt };
  delete body.signature;
  let valid;
  try {
    valid = await ed25519Verify(signature.public_key, signature.value, utf8(canonical(body)));
  } catch (error) {
    return { ok: false, text: `Signature invalid: ${error.message}` };
  }
  if (!valid) return { ok: false, text: "Signature invalid: the receipt was changed or not signed by its key." };
  const platform = await auditKey();
  if (platform.public_key !== signature.public_key) {
    return { ok: false, text: "Signature valid, but by a key that is not this platform's audit key." };
  }
  return { ok: true, text: `Signature valid: signed by this platform's audit key ${platform.key_id}.` };
}

async function sha256(...parts) {
  const joined = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    joined.set(p, at);
    at += p.length;
  }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", joined));
}

// RFC 9162 2.1.3.2: the root an audit path leads to, or null for a path of the wrong shape.
async function rootFromPath(leaf, index, size, path) {
  if (index < 0 || index >= size) return null;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  const one = Uint8Array.of(1);
  for (const p of path) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(one, p, r);
      if (fn % 2 === 0) {
        while (fn !== 0 && fn % 2 === 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = await sha256(one, r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : null;
}

// An entry of the tenant's own log: its path to the log's root, the log's head (under the head
// domain) as a leaf of the platform checkpoint's tree and its path to that root, the signature.
async function verifyTenantProof(proof) {
  const log = proof.tenant_log;
  const cp = proof.platform_checkpoint;
  const root = await rootFromPath(fromHex(proof.leaf_hash), proof.leaf_index, log.size,
    proof.audit_path.map(fromHex));
  if (!root || toHex(root) !== log.root_hash) {
    return { ok: false, text: "Proof does not lead to your log's root." };
  }
  const size = new Uint8Array(8);
  new DataView(size.buffer).setBigUint64(0, BigInt(log.size));
  const head = await sha256(Uint8Array.of(0), utf8("ledgerdesk.log-head.v1\0"),
    fromHex(proof.tenant_id.replaceAll("-", "")), size, fromHex(log.root_hash), fromHex(log.head_hash));
  const top = await rootFromPath(head, proof.log_index, cp.logs, proof.log_path.map(fromHex));
  if (!top || toHex(top) !== cp.root_hash) {
    return { ok: false, text: "Your log's head does not lead to the platform checkpoint's root." };
  }
  const platform = await auditKey();
  const message = utf8(`ledgerdesk platform checkpoint v1\n${platform.origin}\n${cp.number}\n${cp.logs}\n${cp.root_hash}\n${cp.legacy_size}\n${cp.legacy_root}\n${cp.signed_at}\n`);
  const signed = await ed25519Verify(cp.public_key, cp.signature, message);
  if (!signed || platform.public_key !== cp.public_key) {
    return { ok: false, text: "The checkpoint's signature does not verify with this platform's key." };
  }
  return {
    ok: true,
    text: `Included: entry ${proof.seq} is in your log of ${log.size} entries, whose head is in the platform checkpoint signed ${when(cp.signed_at)}, and its signature is valid.`,
  };
}

async function verifyProof(proof) {
  if (proof.log === "tenant") return verifyTenantProof(proof);
  const cp = proof.checkpoint;
  const root = await rootFromPath(fromHex(proof.leaf_hash), proof.leaf_index, cp.tree_size,
    proof.audit_path.map(fromHex));
  if (!root || toHex(root) !== cp.root_hash) {
    return { ok: false, text: "Proof does not lead to the checkpoint's root." };
  }
  const message = utf8(`ledgerdesk-checkpoint-v1\n${cp.tree_size}\n${cp.root_hash}\n${cp.signed_at}\n`);
  const signed = await ed25519Verify(cp.public_key, cp.signature, message);
  const platform = await auditKey();
  if (!signed || platform.public_key !== cp.public_key) {
    return { ok: false, text: "The checkpoint's signature does not verify with this platform's key." };
  }
  return {
    ok: true,
    text: `Included: entry ${proof.seq} is in the checkpoint of ${cp.tree_size} entries signed ${when(cp.signed_at)}, and its signature is valid.`,
  };
}

// --- signing in and out ----------------------------------------------------------------------

function saveSession() {
  sessionStorage.setItem(STORE, JSON.stringify(session));
}

async function signIn(mode, secret) {
  session = { mode, secret };
  if (mode === "operator") {
    await call("GET", "/v1/operator/privacy/services"); // refuses a wrong token
    session.role = "operator";
  } else {
    try {
      Object.assign(session, await call("GET", "/v1/me"));
    } catch (error) {
      // A cancelled tenant's keys may still look at the tenant and reactivate it.
      if (!(error instanceof ApiError && error.status === 403)) throw error;
      const tenant = await call("GET", "/v1/tenant");
      Object.assign(session, { role: "cancelled", tenant_id: tenant.id });
    }
  }
  saveSession();
}

function signOut() {
  stopTimers();
  session = null;
  platformKey = null;
  sessionStorage.removeItem(STORE);
  sessionStorage.removeItem(FILED);
  $("console").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("sign-in").hidden = false;
  $("secret").value = "";
  forgetSearch();
  say("notice", "Signed out.");
  $("secret").focus();
}

// A key another admin made answers to that admin too: the agent swaps it for one of their own.
async function claimKey() {
  try {
    const claimed = await call("POST", "/v1/me/api-keys");
    Object.assign(session, { secret: claimed.api_key, key_id: claimed.id, key_is_own: true });
    saveSession();
    $("claim-key").hidden = true;
    $("claimed-key").value = claimed.api_key;
    $("claimed").hidden = false;
    $("claimed-key").focus();
    say("notice", "Claimed: your other keys have ended, and this tab now uses the new one.", "ok");
  } catch (error) {
    say("notice", `Not claimed: ${error.message}`, "bad");
  }
}

function allowedViews() {
  const role = session.role === "cancelled" ? "admin" : session.role;
  return Object.keys(VIEWS).filter((name) =>
    VIEWS[name].roles.includes(role) && (session.role !== "cancelled" || name === "tenant"));
}

function renderTabs() {
  const list = $("tabs");
  list.replaceChildren(...allowedViews().map((name) => el("button", {
    type: "button", role: "tab", id: `tab-${name}`, "aria-controls": `panel-${name}`,
    "aria-selected": "false", tabindex: "-1", "data-view": name,
    onclick: () => openView(name, true),
  }, VIEWS[name].title)));
}

function onTabKey(event) {
  const tabs = [...$("tabs").querySelectorAll('[role="tab"]')];
  const at = tabs.indexOf(document.activeElement);
  if (at < 0) return;
  const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1 }[event.key];
  if (to === undefined) return;
  event.preventDefault();
  const next = tabs[(to + tabs.length) % tabs.length];
  next.focus();
  openView(next.dataset.view, false);
}

function showConsole() {
  $("sign-in").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = false;
  $("claim").hidden = !(session.mode === "key" && session.key_is_own === false);
  $("claim-key").hidden = false;
  $("claimed").hidden = true;
  $("claimed-key").value = "";
  const role = session.role === "cancelled" ? "a cancelled tenant's key" : session.role;
  $("who").textContent = `Signed in: ${role}`;
  renderTabs();
  const wanted = location.hash.slice(1);
  openView(VIEWS[wanted] ? wanted : allowedViews()[0], false);
}

function openView(name, focus) {
  stopTimers();
  const views = allowedViews();
  for (const view of Object.keys(VIEWS)) $(`panel-${view}`).hidden = true;
  if (!views.includes(name)) {
    const needs = VIEWS[name] ? (VIEWS[name].roles.includes("operator") ? "the operator token"
      : `one of the roles ${VIEWS[name].roles.join(", ")}`) : null;
    say("notice", needs ? `The ${VIEWS[name].title} view needs ${needs}: it is not open to this sign-in.`
      : "There is no such view.");
    name = views[0];
  } else {
    say("notice", "");
  }
  for (const tab of $("tabs").querySelectorAll('[role="tab"]')) {
    const selected = tab.dataset.view === name;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    if (selected && focus) tab.focus();
  }
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  $(`panel-${name}`).hidden = false;
  VIEWS[name].show().catch((error) => {
    if (error instanceof ApiError && error.status === 401) {
      // The key was revoked or the agent deactivated since signing in.
      signOut();
      say("notice", "Signed out: the key or token is no longer valid.");
    } else {
      say("notice", `Could not load: ${error.message}`);
    }
  });
}

// --- privacy requests ------------------------------------------------------------------------

const ANSWER = {
  done: "done",
  retained: "retained",
  failed: "failed",
  pending: "waiting",
};

function answerText(name, answer) {
  let text = `${name}: ${ANSWER[answer.status] || answer.status}`;
  if (answer.status === "retained") {
    text += ` (${answer.basis || "legal hold"}${answer.until ? `, until ${day(answer.until)}` : ""})`;
  } else if (answer.status === "failed" && answer.detail) {
    text += ` (${answer.detail})`;
  }
  return text;
}

function filedIds() {
  return JSON.parse(sessionStorage.getItem(FILED) || "[]");
}

async function loadRequests() {
  try {
    // The list runs oldest first: the board reads a few pages and shows the newest first.
    const items = [];
    let cursor = null;
    for (let page = 0; page < 5; page += 1) {
      const query = new URLSearchParams({ limit: "200" });
      if (cursor) query.set("cursor", cursor);
      const answer = await call("GET", `/v1/privacy/requests?${query}`);
      items.push(...answer.items);
      cursor = answer.next_cursor;
      if (!cursor) break;
    }
    return { items, listed: true };
  } catch (error) {
    if (!unavailable(error)) throw error;
  }
  // Without the list endpoint, the board shows what was filed from this tab.
  const items = [];
  for (const id of filedIds()) {
    try {
      items.push(await call("GET", `/v1/privacy/requests/${id}`));
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
    }
  }
  return { items, listed: false };
}

function requestRow(request) {
  const subject = Object.entries(request.subject || {}).map(([k, v]) => `${k.replace("_id", "")} ${v}`).join(", ");
  const services = request.services || {};
  const answers = Object.keys(services).sort().map((name) => {
    const status = services[name].status;
    const cls = status === "done" ? "ok" : status === "failed" ? "bad" : status === "retained" ? "warn" : "";
    return el("li", {}, el("span", { class: `status ${cls}` }, answerText(name, services[name])));
  });
  const actions = [];
  if (request.type === "access" && request.status === "completed") {
    actions.push(el("button", { type: "button", class: "quiet", onclick: () => downloadExport(request.id) }, "Download export"));
  }
  if (request.type === "erasure" && request.status === "completed") {
    actions.push(el("button", { type: "button", class: "quiet", onclick: () => openReceipt(request.id) }, "Receipt"));
  }
  if (request.status === "awaiting_approval") {
    // A second admin decides, and the reason is kept with the decision.
    const reason = el("input", { type: "text", id: `reason-${request.id}`, size: "18", autocomplete: "off" });
    actions.push(el("label", { for: `reason-${request.id}` }, "Reason"), reason,
      el("button", { type: "button", onclick: () => decide(request.id, "approve", reason) }, "Approve"),
      el("button", { type: "button", class: "quiet", onclick: () => decide(request.id, "deny", reason) }, "Deny"));
  }
  const statusClass = request.status === "completed" ? "ok" : ["failed", "denied"].includes(request.status) ? "bad" : "warn";
  return el("tr", { "data-request": request.id, "data-status": request.status },
    el("td", {}, request.type),
    el("td", { class: "id" }, subject),
    el("td", {}, el("span", { class: `status ${statusClass}` }, request.status),
      request.approval ? el("p", { class: "help" },
        `${request.approval.decision} by ${request.approval.decided_by}: ${request.approval.reason}`) : null),
    el("td", {}, day(request.due_at)),
    el("td", {}, el("ul", { class: "answers" }, answers)),
    el("td", {}, actions));
}

let refreshes = 0;

async function refreshRequests() {
  // Only the latest refresh draws: a slow one finishing late would show older answers.
  refreshes += 1;
  const mine = refreshes;
  const { items, listed } = await loadRequests();
  const detailed = [];
  for (const item of items) {
    // A list item without each service's answer is read in full.
    if (!item.services || typeof item.services !== "object" || Array.isArray(item.services)) {
      detailed.push(await call("GET", `/v1/privacy/requests/${item.id}`));
    } else {
      detailed.push(item);
    }
  }
  if (mine !== refreshes) return true;
  detailed.sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
  // A redraw must not lose a reason being typed, nor the focus of whoever is typing it.
  const body = $("requests").tBodies[0];
  const typed = new Map([...body.querySelectorAll("input")].map((i) => [i.id, i.value]));
  const focused = body.contains(document.activeElement) ? document.activeElement.id : null;
  body.replaceChildren(...detailed.map(requestRow));
  for (const [id, value] of typed) if ($(id)) $(id).value = value;
  if (focused && $(focused)) $(focused).focus();
  const running = detailed.some((r) => r.status === "pending");
  const note = listed ? "" : "The request list is unavailable on this gateway: showing requests filed here. ";
  say("privacy-status", `${note}${detailed.length} request(s)${running ? "; refreshing while one runs." : "."}`);
  return running;
}

let polling = false;

function watchRequests() {
  stopTimers();
  timers.push(setInterval(() => {
    if (polling) return; // the last tick is still waiting for its answers
    polling = true;
    refreshRequests().then((running) => {
      if (!running) stopTimers();
    }).catch(() => {}).finally(() => {
      polling = false;
    });
  }, POLL_MS));
}

async function showPrivacy() {
  if (await refreshRequests()) watchRequests();
}

async function fileRequest(event) {
  event.preventDefault();
  const form = event.target;
  const id = form.subject.value.trim();
  if (!id) {
    say("privacy-status", "Give the subject's id.", "bad");
    form.subject.focus();
    return;
  }
  try {
    const filed = await call("POST", "/v1/privacy/requests",
      { type: form.type.value, subject: { [form.kind.value]: id } });
    const ids = filedIds().filter((known) => known !== filed.id);
    sessionStorage.setItem(FILED, JSON.stringify([filed.id, ...ids].slice(0, 50)));
    form.subject.value = "";
    await refreshRequests();
    say("privacy-status", `Filed a ${filed.type} request; answers appear as each service replies.`);
    watchRequests();
  } catch (error) {
    say("privacy-status", `Not filed: ${error.message}`, "bad");
  }
}

async function decide(id, what, reason) {
  if (!reason.value.trim()) {
    say("privacy-status", `Give the reason to ${what}.`, "bad");
    reason.focus();
    return;
  }
  try {
    await call("POST", `/v1/privacy/requests/${id}/${what}`, { reason: reason.value.trim() });
    await refreshRequests();
    watchRequests();
  } catch (error) {
    say("privacy-status", `Could not ${what}: ${error.message}`, "bad");
  }
}

async function downloadExport(id) {
  const data = await call("GET", `/v1/privacy/requests/${id}/export`);
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: `export-${id}.json` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  say("privacy-status", "Export downloaded.");
}

let shownReceipt = null;

async function openReceipt(id) {
  shownReceipt = await call("GET", `/v1/privacy/requests/${id}/receipt`);
  const r = shownReceipt;
  facts($("receipt-facts"), [
    ["Request", r.request_id],
    ["Subject", Object.values(r.subject || {}).join(", ")],
    ["Completed", when(r.completed_at)],
    ["Services", Object.keys(r.services || {}).sort().map((n) => answerText(n, r.services[n])).join("; ")],
    ["Signed by key", r.signature ? r.signature.key_id : "—"],
  ]);
  $("receipt-json").textContent = JSON.stringify(r, null, 2);
  say("receipt-result", "");
  $("receipt").hidden = false;
  $("verify-receipt").focus();
}

async function verifyShownReceipt() {
  if (!shownReceipt) return;
  say("receipt-result", "Verifying…");
  const result = await verifyReceipt(shownReceipt);
  say("receipt-result", result.text, result.ok ? "ok" : "bad");
}

// --- search ----------------------------------------------------------------------------------

// The words searched for live in the form only: never in the page's address, the session or
// a log; the cursor of the next page carries no word either.
let searchCursor = null;
let searchedFor = "";

function resultRow(ticket) {
  return el("tr", { "data-ticket": ticket.id },
    el("td", {}, ticket.subject),
    el("td", {}, ticket.status),
    el("td", {}, ticket.priority),
    el("td", {}, String(ticket.matched_terms)),
    el("td", {}, when(ticket.updated_at)),
    el("td", { class: "id" }, ticket.id));
}

async function runSearch(more) {
  const q = more ? searchedFor : $("search-q").value.trim();
  if (!more && q.length < 3) {
    say("search-status", "Type at least three letters.", "bad");
    return;
  }
  const params = new URLSearchParams({ q, limit: "20" });
  if (more && searchCursor) params.set("cursor", searchCursor);
  try {
    const page = await call("GET", `/v1/search?${params}`);
    const body = $("search-results").tBodies[0];
    const rows = page.items.map(resultRow);
    if (more) body.append(...rows);
    else body.replaceChildren(...rows);
    searchedFor = q;
    searchCursor = page.next_cursor;
    $("more-results").hidden = !searchCursor;
    const left = page.terms_left_out
      ? ` ${page.terms_left_out} word(s) too common to rank by were left out.` : "";
    say("search-status", `${body.rows.length} ticket${body.rows.length === 1 ? "" : "s"} found${searchCursor ? "; more are available" : ""}.${left}`);
  } catch (error) {
    say("search-status", `Could not search: ${error.message}`, "bad");
  }
}

function forgetSearch() {
  searchedFor = "";
  searchCursor = null;
  $("search-q").value = "";
  $("search-results").tBodies[0].replaceChildren();
  $("more-results").hidden = true;
  say("search-status", "");
}

// Nothing to load: the form waits for words. The focus stays where the view was opened from
// (the tab list's arrow keys move between views without leaving it).
async function showSearch() {}

// --- ledger ----------------------------------------------------------------------------------

let ledgerCursor = null;

function ledgerQuery(form) {
  const params = new URLSearchParams();
  const type = form.type.value.trim();
  const subject = form.subject.value.trim();
  if (type) params.set("type", type);
  if (subject) params.set("subject_id", subject);
  for (const name of ["from", "to"]) {
    if (form[name].value) params.set(name, `${form[name].value.length === 16 ? `${form[name].value}:00` : form[name].value}Z`);
  }
  return params;
}

function entryRow(entry) {
  return el("tr", { "data-seq": entry.seq, "data-type": entry.type },
    el("td", {}, entry.seq),
    el("td", {}, when(entry.at)),
    el("td", {}, entry.type),
    el("td", {}, entry.service),
    el("td", { class: "id" }, entry.actor_id || "—"),
    el("td", { class: "id" }, (entry.subject_ids || []).join(" ")),
    el("td", {}, el("button", { type: "button", class: "quiet", "aria-label": `Inclusion proof of entry ${entry.seq}`, onclick: () => showProof(entry.seq, entry.log) }, "Proof")));
}

async function loadEntries(more) {
  const params = ledgerQuery($("ledger-filter"));
  params.set("limit", "50");
  if (more && ledgerCursor) params.set("cursor", ledgerCursor);
  try {
    const page = await call("GET", `/v1/audit/entries?${params}`);
    const body = $("entries").tBodies[0];
    const rows = page.items.map(entryRow);
    if (more) body.append(...rows);
    else body.replaceChildren(...rows);
    ledgerCursor = page.next_cursor;
    $("more-entries").hidden = !ledgerCursor;
    const types = new Set([...$("entry-types").options].map((o) => o.value));
    for (const item of page.items) {
      if (!types.has(item.type)) {
        types.add(item.type);
        $("entry-types").append(el("option", { value: item.type }));
      }
    }
    say("ledger-status", `${body.rows.length} entr${body.rows.length === 1 ? "y" : "ies"} shown${ledgerCursor ? "; more are available" : ""}.`);
  } catch (error) {
    say("ledger-status", `Could not read the ledger: ${error.message}`, "bad");
  }
}

async function showLedger() {
  const badge = $("ledger-badge");
  badge.className = "badge";
  badge.textContent = "Verifying the chain…";
  const [verdict] = await Promise.all([call("GET", "/v1/audit/verify"), loadEntries(false)]);
  // The tenant's own entries only, and the platform check's verdict without its figures.
  const platform = verdict.platform.verified_at
    ? `platform check ${verdict.platform.ok ? "intact" : "FAILED"} ${when(verdict.platform.verified_at)}`
    : "platform check not run yet";
  if (verdict.ok) {
    badge.classList.add("ok");
    badge.textContent = `Ledger verified: ${verdict.included} of your ${verdict.entries} entries proved in a signed checkpoint (${verdict.pending} not proved yet), ${platform}.`;
  } else {
    badge.classList.add("bad");
    badge.textContent = verdict.first_bad_seq
      ? `Ledger broken: your entry ${verdict.first_bad_seq} does not verify.`
      : `Ledger broken: ${platform}.`;
  }
}

async function showProof(seq, log = "tenant") {
  $("proof").hidden = false;
  say("proof-result", `Checking entry ${seq}…`);
  try {
    const proof = await call("GET", `/v1/audit/entries/${seq}/proof?log=${log}`);
    $("proof-json").textContent = JSON.stringify(proof, null, 2);
    const result = await verifyProof(proof);
    say("proof-result", result.text, result.ok ? "ok" : "bad");
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) {
      // Not in a signed checkpoint yet; asking again once the next one is signed.
      say("proof-result", `${error.message} Checking again shortly…`);
      setTimeout(() => showProof(seq, log), 5000);
      return;
    }
    say("proof-result", `No proof: ${error.message}`, "bad");
  }
}

async function whoAccessed() {
  const form = $("ledger-filter");
  const subject = form.subject.value.trim();
  if (!subject) {
    say("ledger-status", "Give a subject id first.", "bad");
    form.subject.focus();
    return;
  }
  const list = $("accessed-list");
  try {
    const page = await call("GET", `/v1/audit/subjects/${encodeURIComponent(subject)}/entries?type=access_logged&limit=200`);
    const reads = page.items.filter((e) => e.actor_id && e.actor_id !== subject);
    list.replaceChildren(...(reads.length ? reads.map((e) => el("li", {},
      `${when(e.at)} — ${e.actor_id} — ${(e.payload && e.payload.method) || ""} ${(e.payload && e.payload.route) || e.type}`))
      : [el("li", {}, "Nobody: no access is recorded.")]));
    $("accessed").hidden = false;
  } catch (error) {
    say("ledger-status", `Could not read who accessed: ${error.message}`, "bad");
  }
}

async function checkPastedReceipt(event) {
  event.preventDefault();
  let receipt;
  try {
    receipt = JSON.parse($("receipt-text").value);
  } catch {
    say("check-result", "That is not JSON.", "bad");
    return;
  }
  say("check-result", "Verifying…");
  const result = await verifyReceipt(receipt);
  say("check-result", result.text, result.ok ? "ok" : "bad");
}

// --- tenant ----------------------------------------------------------------------------------

function countdown(until) {
  const left = Math.max(0, Date.parse(until) - Date.now());
  const s = Math.floor(left / 1000);
  const d = Math.floor(s / 86400);
  const hms = [Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60), s % 60]
    .map((n) => String(n).padStart(2, "0")).join(":");
  return left ? `${d} days ${hms} left of the grace period: destroyed after ${when(until)}.` : "The grace period is over: destruction is due.";
}

async function showTenant() {
  const tenant = await call("GET", "/v1/tenant");
  facts($("tenant-facts"), [
    ["Company", tenant.company], ["Status", tenant.status], ["Region", tenant.region],
    ["Plan", tenant.plan], ["Tenant id", tenant.id],
    // Where customers' mail opens tickets: forward the public support address here.
    ["Support address (mail in)", tenant.support_address || "—"],
  ]);
  const cancelled = tenant.status === "cancelled";
  const grace = $("grace");
  grace.hidden = !cancelled;
  $("reactivate").hidden = !cancelled || !["admin", "cancelled"].includes(session.role);
  if (cancelled && tenant.destroy_after) {
    grace.textContent = countdown(tenant.destroy_after);
    timers.push(setInterval(() => { grace.textContent = countdown(tenant.destroy_after); }, 1000));
  }
}

async function reactivate() {
  try {
    await call("POST", "/v1/tenant/reactivate");
    say("tenant-status", "Reactivated: the tenant is active again.", "ok");
    stopTimers();
    if (session.role === "cancelled") {
      await signIn(session.mode, session.secret);
      showConsole();
      openView("tenant", true);
      say("tenant-status", "Reactivated: the tenant is active again.", "ok");
    } else {
      await showTenant();
    }
  } catch (error) {
    say("tenant-status", `Not reactivated: ${error.message}`, "bad");
  }
}

// --- retention -------------------------------------------------------------------------------

async function showRetention() {
  const { items } = await call("GET", "/v1/retention/policies");
  const editable = session.role === "admin";
  $("policies").tBodies[0].replaceChildren(...items.map((p) => {
    const input = el("input", { type: "number", min: "1", step: "1", value: p.days, id: `days-${p.category}`, "aria-label": `Days to keep ${p.category}`, disabled: !editable, size: "6" });
    const save = el("button", { type: "button", "aria-label": `Save ${p.category}`, disabled: !editable, onclick: () => savePolicy(p.category, input) }, "Save");
    return el("tr", { "data-category": p.category },
      el("th", { scope: "row" }, p.category), el("td", {}, input),
      el("td", {}, p.overridden ? "own" : "platform"), el("td", {}, p.description), el("td", {}, save));
  }));
}

async function savePolicy(category, input) {
  const days = Number(input.value);
  if (!Number.isInteger(days) || days < 1) {
    say("retention-status", "Days must be a whole number of at least 1.", "bad");
    input.focus();
    return;
  }
  try {
    const answer = await call("PUT", `/v1/retention/policies/${encodeURIComponent(category)}`, { days });
    await showRetention();
    if (answer.status === "awaiting_approval") {
      // Shortening a period erases sooner: where erasure needs approval, so does this.
      say("retention-status", `Waiting: ${days} days for ${category} applies once another admin approves change ${answer.id}.`);
    } else {
      say("retention-status", `Saved: ${category} is kept for ${days} days.`, "ok");
    }
  } catch (error) {
    say("retention-status", `Not saved: ${error.message}`, "bad");
  }
}

// --- mail ----------------------------------------------------------------------------------

let mailCursor = null;

function mailRow(mail) {
  const reply = [mail.last_code, mail.last_outcome].filter((v) => v !== null).join(" ");
  return el("tr", { "data-mail": mail.id, "data-reference": mail.reference_id || "" },
    el("td", {}, when(mail.created_at)),
    el("td", {}, mail.kind),
    el("td", { class: "id" }, mail.recipient_id),
    el("td", { class: "id" }, mail.reference_id || "—"),
    el("td", {}, mail.attempts),
    el("td", {}, reply || "—"),
    el("td", {}, when(mail.finished_at)));
}

async function loadMail(more) {
  const params = new URLSearchParams({ status: "failed", limit: "50" });
  if (more && mailCursor) params.set("cursor", mailCursor);
  const page = await call("GET", `/v1/mail?${params}`);
  const body = $("failed-mail").tBodies[0];
  const rows = page.items.map(mailRow);
  if (more) body.append(...rows);
  else body.replaceChildren(...rows);
  mailCursor = page.next_cursor;
  $("more-mail").hidden = !mailCursor;
  say("mail-status", body.rows.length
    ? `${body.rows.length} failed mail(s) shown${mailCursor ? "; more are available" : ""}.`
    : "No failed mail.");
}

async function showMail() {
  await loadMail(false);
}

// --- incidents -------------------------------------------------------------------------------

// The GDPR Art. 33 clock: time left until the deadline the API gives, or that it has passed.
export function clock(deadline, now = Date.now()) {
  const left = Date.parse(deadline) - now;
  if (left <= 0) return { passed: true, text: `The 72 hours ended ${when(deadline)} UTC.` };
  const s = Math.floor(left / 1000);
  const hms = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60]
    .map((n) => String(n).padStart(2, "0")).join(":");
  return { passed: false, text: `${hms} left of the 72 hours to notify your supervisory authority: until ${when(deadline)} UTC.` };
}

function incidentCard(incident) {
  const timer = el("p", { class: "badge", role: "timer", "aria-live": "off" });
  const tick = () => {
    const { passed, text } = clock(incident.deadline);
    timer.textContent = text;
    timer.classList.toggle("bad", passed);
    timer.classList.toggle("warn", !passed);
    return passed;
  };
  if (!tick()) timers.push(setInterval(tick, 1000));
  const mine = incident.acknowledgements.find((a) => a.agent_id === session.agent_id);
  const dl = el("dl");
  facts(dl, [
    ["Categories of data", incident.categories.join(", ")],
    ["Operator aware since (UTC)", when(incident.aware_at)],
    ["Deadline (UTC)", when(incident.deadline)],
    ["Notified admins", incident.notified_ids.length],
    ["Acknowledged by", incident.acknowledgements.map((a) => a.agent_id).join(", ") || "no one yet"],
  ]);
  const acknowledge = el("button", {
    type: "button", class: "acknowledge", disabled: Boolean(mine),
    "aria-label": `Acknowledge incident ${incident.id}`,
    onclick: () => acknowledgeIncident(incident.id),
  }, mine ? "Acknowledged" : "Acknowledge");
  return el("article", { class: "incident", "data-incident": incident.id,
    "data-acknowledged": mine ? "true" : "false" },
    el("h3", {}, `Incident ${incident.id}`), timer, dl,
    el("h4", {}, "What happened"), el("p", { class: "description" }, incident.description),
    acknowledge, mine ? el("span", { class: "help" }, ` by you, ${when(mine.acknowledged_at)} UTC`) : null);
}

async function showIncidents() {
  const { items } = await call("GET", "/v1/incidents?limit=200");
  // Newest first: the one whose clock runs now is the one to act on.
  const cards = items.slice().reverse().map(incidentCard);
  $("incidents").replaceChildren(...cards);
  say("incidents-status", items.length ? "" : "No incident has been notified to this tenant.");
}

async function acknowledgeIncident(id) {
  try {
    await call("POST", `/v1/incidents/${encodeURIComponent(id)}/acknowledgements`);
    stopTimers();
    await showIncidents();
    say("incidents-status", `Acknowledged incident ${id}: the ledger records it.`, "ok");
  } catch (error) {
    say("incidents-status", `Not acknowledged: ${error.message}`, "bad");
  }
}

// --- operations ------------------------------------------------------------------------------

async function optional(path) {
  try {
    return await call("GET", path);
  } catch (error) {
    if (unavailable(error)) return null;
    throw error;
  }
}

async function showOperations() {
  const [registry, health, dead] = await Promise.all([
    call("GET", "/v1/operator/privacy/services"),
    optional("/v1/operator/health"),
    optional("/v1/operator/dead-letters"),
  ]);
  const perService = (health && health.services) || {};
  // null from a live health answer means "nothing waiting"; no answer at all is "unavailable".
  const cell = (value) => (!health || value === undefined ? "unavailable" : value === null ? "none" : String(value));
  const names = new Set([...registry.items.map((s) => s.name), ...Object.keys(perService)]);
  $("services").tBodies[0].replaceChildren(...[...names].sort().map((name) => {
    const announced = registry.items.find((s) => s.name === name);
    const h = perService[name] || {};
    return el("tr", { "data-service": name }, el("th", { scope: "row" }, name),
      el("td", {}, announced ? announced.categories.join(", ") || "none" : "not announced"),
      el("td", {}, cell(h.ready)), el("td", {}, cell(h.database)),
      el("td", {}, cell(h.outbox_lag)), el("td", {}, cell(h.outbox_oldest_seconds)));
  }));
  const broker = $("broker");
  broker.className = "badge";
  if (!health) {
    broker.textContent = "Health is unavailable on this gateway.";
  } else {
    const up = health.broker === true || (health.broker && health.broker.reachable);
    broker.classList.add(up ? "ok" : "bad");
    broker.textContent = up ? "Broker reachable." : "Broker unreachable.";
  }
  renderDeadLetters(dead);
}

// ``outcome`` leads the status line so a replay's result is not replaced by the list it refreshes.
function renderDeadLetters(dead, outcome = "") {
  const body = $("dead-letters").tBodies[0];
  if (!dead) {
    body.replaceChildren();
    say("dead-status", "Dead letters are unavailable on this gateway.");
    return;
  }
  // One replay button per queue, on its first row: a replay moves the whole queue back.
  const first = (d, i) => dead.items.findIndex((x) => x.queue === d.queue) === i;
  body.replaceChildren(...dead.items.map((d, i) => el("tr", {},
    el("td", {}, d.queue), el("td", { class: "id" }, d.message_id || "—"),
    el("td", {}, d.event_type || d.type || "—"),
    el("td", {}, d.deaths ?? d.attempts ?? "—"), el("td", {}, d.reason || "—"),
    el("td", {}, first(d, i)
      ? el("button", { type: "button", "aria-label": `Replay the dead letters of ${d.queue}`, onclick: () => replay(d.queue) }, "Replay queue") : ""))));
  const count = dead.items.length ? `${dead.items.length} dead letter(s).` : "No dead letters.";
  say("dead-status", outcome ? `${outcome} ${count}` : count, outcome ? "ok" : undefined);
}

async function replay(queue) {
  try {
    const result = await call("POST", `/v1/operator/dead-letters/${encodeURIComponent(queue)}/replay`, {});
    const outcome = `Replayed ${result && result.replayed !== undefined ? result.replayed : "the"} message(s) of ${queue}.`;
    say("dead-status", outcome, "ok");
    const dead = await optional("/v1/operator/dead-letters");
    if (dead) renderDeadLetters(dead, outcome);
  } catch (error) {
    say("dead-status", `Not replayed: ${error.message}`, "bad");
  }
}

// --- start -----------------------------------------------------------------------------------

function start() {
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const secret = form.secret.value.trim();
    say("sign-in-error", "");
    if (!secret) {
      say("sign-in-error", "Enter a key or a token.");
      form.secret.focus();
      return;
    }
    try {
      await signIn(form.mode.value, secret);
      form.secret.value = "";
      showConsole();
      $("main").focus();
    } catch (error) {
      session = null;
      sessionStorage.removeItem(STORE);
      say("sign-in-error", error instanceof ApiError && error.status === 401
        ? "Not signed in: that key or token is not valid." : `Not signed in: ${error.message}`);
    }
  });
  $("sign-out").addEventListener("click", signOut);
  $("tabs").addEventListener("keydown", onTabKey);
  $("file-request").addEventListener("submit", fileRequest);
  $("verify-receipt").addEventListener("click", () => verifyShownReceipt());
  $("ledger-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    $("accessed").hidden = true;
    loadEntries(false);
  });
  $("who-accessed").addEventListener("click", whoAccessed);
  $("more-entries").addEventListener("click", () => loadEntries(true));
  $("more-mail").addEventListener("click", () => loadMail(true).catch((error) =>
    say("mail-status", `Could not read the mail: ${error.message}`, "bad")));
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch(false);
  });
  $("more-results").addEventListener("click", () => runSearch(true));
  $("check-receipt").addEventListener("submit", checkPastedReceipt);
  $("reactivate").addEventListener("click", reactivate);
  $("claim-key").addEventListener("click", claimKey);
  window.addEventListener("hashchange", () => {
    // Only view names: the skip link's #main is a place in the page, not a view.
    const name = location.hash.slice(1);
    if (session && VIEWS[name]) openView(name, false);
  });

  const saved = sessionStorage.getItem(STORE);
  session = saved ? JSON.parse(saved) : null;
  if (session) {
    showConsole();
  } else {
    $("sign-in").hidden = false;
  }
}

start();
