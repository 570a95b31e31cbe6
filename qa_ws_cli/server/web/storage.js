// What survives a reload of this tab (sessionStorage: the session, its last seq, unanswered
// messages, the conversation) and, only when the user asks, the token on this device
// (localStorage). Storage that is full or switched off makes the page forget, never fail.
const TOKEN = "qa-ws.token";
const MAX_ENTRIES = 200;

function read(store, key, fallback) {
  try {
    const value = JSON.parse(store.getItem(key));
    return value ?? fallback;
  } catch {
    return fallback;
  }
}

function write(store, key, value) {
  try {
    if (value === null) store.removeItem(key);
    else store.setItem(key, JSON.stringify(value));
  } catch { /* full or disabled: this tab just forgets */ }
}

export const token = {
  load() { return read(sessionStorage, TOKEN, null) ?? read(localStorage, TOKEN, ""); },
  remembered() { return read(localStorage, TOKEN, null) !== null; },
  save(value, remember) {
    write(sessionStorage, TOKEN, remember ? null : value);
    write(localStorage, TOKEN, remember ? value : null);
  },
};

export const tab = {
  session() { return read(sessionStorage, "qa-ws.session", { id: null, user: null, lastSeq: 0 }); },
  saveSession(session) { write(sessionStorage, "qa-ws.session", session); },
  pending() { return new Map(read(sessionStorage, "qa-ws.pending", [])); },
  savePending(pending) { write(sessionStorage, "qa-ws.pending", [...pending]); },
  entries() { return read(sessionStorage, "qa-ws.transcript", []); },
  addEntry(entry) {
    const entries = this.entries();
    entries.push(entry);
    write(sessionStorage, "qa-ws.transcript", entries.slice(-MAX_ENTRIES));
  },
  forget() {
    for (const key of ["qa-ws.session", "qa-ws.pending", "qa-ws.transcript"]) write(sessionStorage, key, null);
  },
};
