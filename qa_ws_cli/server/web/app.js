// The chat page: one WebSocket to this server, sessions that survive reloads and restarts.
//
// The browser cannot set headers on a WebSocket: the token travels as a subprotocol entry
// (bearer.<jwt>) next to qa-ws.v1, never in the URL. A browser never sees why a handshake was
// refused (401, 403, 429 and 503 all look like close code 1006): a socket that fails before
// its first connection is a refusal and is not retried; one that had been connected retries
// with backoff (a restart), until its token expires. Unanswered messages are kept in this tab's
// sessionStorage and sent again with the same id after a reconnect or a reload: the server
// answers an id once (a stored answer is sent again, one in flight is joined).
import { copyCode } from "./markdown.js";
import * as view from "./view.js";
import { tab, token as savedToken } from "./storage.js";
import { Uploads } from "./uploads.js";

const $ = (id) => document.getElementById(id);
const input = $("input"), tokenBox = $("token"), statusLine = $("status"), remember = $("remember");

// the token leaves the address bar (and so the history) before anything else happens
const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (location.hash) history.replaceState(null, "", location.pathname + location.search);

const FINAL = {
  1000: "closed by the server (the session may be open elsewhere): Connect to resume it",
  1008: "closed by the server (policy violation)", 1009: "a message was too large",
  4001: "token expired: paste a fresh one and Connect", 4003: "token revoked",
};
let ws = null, timer = null, retry = 0, hintMs = 0, everConnected = false, open = false;
let awaitingReplay = 0;
let session = tab.session();  // {id, user, lastSeq}
const pending = tab.pending();  // id -> {text, attachments, sentAt, firstAt}
const answers = new Map();  // id -> view.Answer still streaming
const finished = new Set();  // ids already answered here (a resend's second answer is dropped)
const uploads = new Uploads(() => tokenBox.value.trim(), () => session.id || "", updateControls);

function claims(jwt) {  // unverified: only to name the user and to see an expiry
  try { return JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))); }
  catch { return {}; }
}
function expired(jwt) { const exp = claims(jwt).exp; return typeof exp === "number" && exp * 1000 <= Date.now(); }
function status(state, text) { statusLine.dataset.state = state; statusLine.textContent = text; }
let tokenShown = false;  // the token form, folded away while connected unless asked for
function updateControls() {
  input.disabled = !open;
  $("send").disabled = !open || uploads.busy;
  $("auth").hidden = open && !tokenShown;
  $("change").hidden = !open;
  $("change").setAttribute("aria-expanded", String(!$("auth").hidden));
}
function stop(text, note) { open = false; updateControls(); status("stopped", text); if (note) view.systemLine(note); }
function saveSession() { tab.saveSession(session); }
function newId() { return `web-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`; }

function chatFrame(id, p) {
  const frame = { type: "chat_message", id, content: p.text };
  if (p.attachments && p.attachments.length) frame.attachments = p.attachments;
  return JSON.stringify(frame);
}

function answerFor(id) {
  let answer = answers.get(id);
  if (!answer) {
    answer = new view.Answer(id, cancel);
    answers.set(id, answer);
    const p = pending.get(id);
    answer.streaming(p?.sentAt, p?.firstAt);
  }
  return answer;
}

function cancel(target) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "cancel", id: newId(), target }));
}

function resendPending() {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  for (const [id, p] of pending) ws.send(chatFrame(id, p));
}

function connect() {
  clearTimeout(timer);
  timer = null;
  const jwt = tokenBox.value.trim();
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (session.id) { url.searchParams.set("session_id", session.id); url.searchParams.set("last_seq", session.lastSeq); }
  const sock = ws = new WebSocket(url, jwt ? ["qa-ws.v1", "bearer." + jwt] : ["qa-ws.v1"]);
  let opened = false;
  status("connecting", retry ? `connecting… (attempt ${retry + 1})` : "connecting…");
  sock.onopen = () => { opened = true; };
  sock.onmessage = (e) => { if (sock === ws) handle(JSON.parse(e.data)); };
  sock.onclose = (e) => {
    if (sock !== ws) return;  // replaced by Connect
    ws = null;
    open = false;
    updateControls();
    if (FINAL[e.code]) return stop(`disconnected (${e.code})`, FINAL[e.code]);
    if (jwt && expired(jwt)) return stop("token expired", "token expired: paste a fresh one and Connect");
    if (!opened && !everConnected) {
      return stop("refused: check the token, then Connect",
        "the server refused the connection: an invalid, expired or revoked token, a token " +
        "without the 'chat' scope, an origin it does not allow, or it is full");
    }
    const delay = Math.max(hintMs, Math.min(8000, 250 * 2 ** retry++) * (0.5 + Math.random() / 2));
    hintMs = 0;
    status("reconnecting", `connection lost (${e.code}): reconnecting in ${view.duration(delay)}…`);
    timer = setTimeout(connect, delay);
  };
}

function onConnected(ev) {
  if (!ev.resumed) {
    session.lastSeq = 0;
    if (session.id) view.systemLine("reconnected with a new session: unanswered questions are asked again");
    for (const id of pending.keys()) answers.get(id)?.restart();
  }
  session = { id: ev.session_id, user: ev.user, lastSeq: session.lastSeq };
  saveSession();
  retry = 0; everConnected = true; open = true;
  uploads.configure(ev.limits);
  updateControls();
  status("connected", `connected as ${ev.user} · session ${ev.session_id.slice(0, 8)}${ev.resumed ? " (resumed)" : ""}`);
  if (document.activeElement === document.body) input.focus();
  awaitingReplay = ev.resumed ? ev.replayed : 0;  // resend only what the replay did not answer
  if (!awaitingReplay) resendPending();
}

function settle(id) {
  answers.delete(id);
  finished.add(id);
  if (pending.delete(id)) tab.savePending(pending);
}

function onSystem(ev) {
  if (ev.event === "broadcast") {
    view.systemLine("📣 " + ev.message);
    tab.addEntry({ kind: "system", text: "📣 " + ev.message });
  } else if (ev.event === "notification") {
    view.systemLine("🔔 " + ev.message);
    tab.addEntry({ kind: "system", text: "🔔 " + ev.message });
  } else if (ev.event === "shutdown") {
    hintMs = ev.reconnect_after_ms || 0;
    view.systemLine("the server is restarting…");
  } else if (ev.event === "token_expiring") {
    view.systemLine(`the token expires at ${ev.expires_at}: paste a fresh one and Connect`);
  }
}

function onAnswer(ev) {
  const id = ev.reply_to;
  if (finished.has(id)) return;
  const shown = answerFor(id).finish(ev.content, ev.latency_ms, ev.tools, ev.attachments);
  settle(id);
  tab.addEntry({ kind: "agent", id, content: ev.content, latency: ev.latency_ms, tools: ev.tools, ...shown });
}

function onError(ev) {
  const text = `${ev.code}: ${ev.message}`;
  if (ev.reply_to) {
    if (finished.has(ev.reply_to)) return;
    answers.get(ev.reply_to)?.stopped();
    if (pending.has(ev.reply_to) || answers.has(ev.reply_to)) settle(ev.reply_to);
  }
  view.errorLine(text);
  tab.addEntry({ kind: "error", id: ev.reply_to, text });
}

function handle(ev) {
  if (typeof ev.seq === "number") {
    if (ev.seq <= session.lastSeq) return;
    session.lastSeq = ev.seq;
    saveSession();
  }
  if (ev.type === "system_event" && ev.event === "connected") onConnected(ev);
  else if (ev.type === "system_event") onSystem(ev);
  else if (ev.type === "agent_delta" && !finished.has(ev.reply_to)) {
    const answer = answerFor(ev.reply_to);
    answer.delta(ev.delta);
    const p = pending.get(ev.reply_to);
    if (p && !p.firstAt) { p.firstAt = answer.firstAt; tab.savePending(pending); }
  } else if (ev.type === "agent_event" && !finished.has(ev.reply_to)) answerFor(ev.reply_to).event(ev);
  else if (ev.type === "agent_response") onAnswer(ev);
  else if (ev.type === "error") onError(ev);
  if (typeof ev.seq === "number" && awaitingReplay > 0 && --awaitingReplay === 0) resendPending();
}

function forgetSession() {
  session = { id: null, user: null, lastSeq: 0 };
  for (const answer of answers.values()) answer.stopped();
  pending.clear(); answers.clear(); finished.clear();
  tab.forget();
  view.clearLog();
}

function start(jwt) {
  if (ws) { const old = ws; ws = null; old.close(1000); }
  savedToken.save(jwt, remember.checked);
  if (claims(jwt).sub !== session.user) forgetSession();  // another user: a fresh session
  retry = 0; everConnected = false;
  connect();
}

function send() {
  const text = input.value.trim();
  if (!text || !ws || ws.readyState !== WebSocket.OPEN || uploads.busy) return;
  const files = uploads.take();
  const id = newId();
  const p = { text, attachments: files.map((f) => f.id), sentAt: Date.now(), firstAt: null };
  pending.set(id, p);
  tab.savePending(pending);
  view.userLine(text, files);
  tab.addEntry({ kind: "user", id, text, files: files.map(({ name, mime }) => ({ name, mime })) });
  answerFor(id);
  ws.send(chatFrame(id, p));
  input.value = "";
  grow();
}

function grow() {  // the box grows with its text; the conversation keeps its end in view
  view.keepScrolled(() => {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight + 2, 192)}px`;
  });
}

// what this tab showed before a reload
for (const entry of tab.entries()) {
  if (entry.kind === "user") view.userLine(entry.text, entry.files);
  else if (entry.kind === "agent") { view.storedAnswer(entry); finished.add(entry.id); }
  else if (entry.kind === "system") view.systemLine(entry.text);
  else if (entry.kind === "error") { view.errorLine(entry.text); if (entry.id) finished.add(entry.id); }
}
for (const id of pending.keys()) answerFor(id);

$("auth").addEventListener("submit", (e) => { e.preventDefault(); tokenShown = false; start(tokenBox.value.trim()); });
$("change").addEventListener("click", () => {
  tokenShown = $("auth").hidden;
  updateControls();
  if (tokenShown) tokenBox.focus();
});
remember.addEventListener("change", () => { if (tokenBox.value.trim()) savedToken.save(tokenBox.value.trim(), remember.checked); });
$("form").addEventListener("submit", (e) => { e.preventDefault(); send(); });
input.addEventListener("input", grow);
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("form").requestSubmit(); }
});
$("log").addEventListener("click", (e) => {
  const button = e.target.closest("button.copy");
  if (button) copyCode(button);
});
window.addEventListener("online", () => { if (timer) { retry = 0; connect(); } });

remember.checked = savedToken.remembered();
const initial = fromHash || savedToken.load();
if (initial) { tokenBox.value = initial; start(initial); }
