// Attachments for the next message: the attach button, drag and drop and paste upload each file
// with `POST /files` (multipart field `file`, the token as a bearer header; without one, the
// session's id as `?session_id=`) and keep its
// `file_id`. Switched on only when the server's `connected` event announces uploads
// (`limits.max_upload_bytes`); until then nothing here is visible.
const tray = document.getElementById("tray");
const attach = document.getElementById("attach");
const picker = document.getElementById("file");
const drop = document.getElementById("drop");
const hint = document.getElementById("hint");
const HINT = hint.textContent;

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export class Uploads {
  constructor(currentToken, currentSession, onChange) {
    this.currentToken = currentToken;
    this.currentSession = currentSession;
    this.onChange = onChange;
    this.items = [];
    this.maxBytes = 0;
    this.maxFiles = 10;
    attach.addEventListener("click", () => picker.click());
    picker.addEventListener("change", () => { this.add(picker.files); picker.value = ""; });
    let depth = 0;
    document.addEventListener("dragenter", (e) => {
      if (!this.enabled || !e.dataTransfer?.types.includes("Files")) return;
      depth += 1;
      drop.hidden = false;
    });
    document.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) drop.hidden = true; });
    document.addEventListener("dragover", (e) => e.preventDefault());  // never navigate to a dropped file
    document.addEventListener("drop", (e) => {
      e.preventDefault();
      depth = 0;
      drop.hidden = true;
      if (this.enabled && e.dataTransfer?.files.length) this.add(e.dataTransfer.files);
    });
    document.getElementById("input").addEventListener("paste", (e) => {
      if (this.enabled && e.clipboardData?.files.length) { e.preventDefault(); this.add(e.clipboardData.files); }
    });
  }

  get enabled() { return this.maxBytes > 0; }

  /** From the `connected` event's `limits`: uploads exist when it names their size limit. */
  configure(limits) {
    const max = limits && limits.max_upload_bytes;
    this.maxBytes = typeof max === "number" && max > 0 ? max : 0;
    if (typeof limits?.max_attachments === "number") this.maxFiles = limits.max_attachments;
    attach.hidden = !this.enabled;
    hint.textContent = this.enabled ? `${HINT} · drop or paste files to attach them` : HINT;
  }

  add(files) {
    for (const file of files) {
      if (this.items.length >= this.maxFiles) break;
      const item = { file, name: file.name, mime: file.type, state: "uploading", id: null, thumb: null };
      if (file.type.startsWith("image/")) item.thumb = URL.createObjectURL(file);
      this.items.push(item);
      if (file.size > this.maxBytes) this.fail(item, `too large (at most ${size(this.maxBytes)})`);
      else this.upload(item);
    }
    this.draw();
  }

  async upload(item) {
    const body = new FormData();
    body.append("file", item.file, item.name);
    try {
      // without a token (a server started with --no-auth) the session's id names the owner
      const token = this.currentToken();
      const url = token ? "/files" : "/files?session_id=" + encodeURIComponent(this.currentSession());
      const headers = token ? { Authorization: "Bearer " + token } : {};
      const resp = await fetch(url, { method: "POST", body, headers });
      const answer = await resp.json().catch(() => ({}));
      if (resp.status !== 201 || typeof answer.file_id !== "string") {
        return this.fail(item, answer.detail || `upload refused (${resp.status})`);
      }
      item.id = answer.file_id;
      item.state = "ready";
    } catch {
      return this.fail(item, "upload failed: is the server reachable?");
    }
    this.draw();
  }

  fail(item, why) { item.state = "failed"; item.why = why; this.draw(); }

  get busy() { return this.items.some((i) => i.state === "uploading"); }

  /** The ready files, for the message being sent; the tray empties. */
  take() {
    const ready = this.items.filter((i) => i.state === "ready");
    this.items = [];
    this.draw();
    return ready.map(({ id, name, mime, thumb }) => ({ id, name, mime, thumb }));
  }

  draw() {
    tray.replaceChildren();
    for (const item of this.items) {
      const chip = document.createElement("li");
      chip.className = "chip";
      chip.dataset.state = item.state;
      if (item.thumb) {
        const img = document.createElement("img");
        img.src = item.thumb;
        img.alt = "";
        chip.append(img);
      }
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = item.name;
      const state = document.createElement("span");
      state.textContent = item.state === "failed" ? item.why : item.state === "uploading" ? "uploading…" : size(item.file.size);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.setAttribute("aria-label", `Remove ${item.name}`);
      remove.addEventListener("click", () => { this.items = this.items.filter((i) => i !== item); this.draw(); });
      chip.append(name, state, remove);
      tray.append(chip);
    }
    tray.hidden = !this.items.length;
    this.onChange();
  }
}
