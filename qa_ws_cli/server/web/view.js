// What the conversation looks like: bubbles, the answer's timings, the agent's tool progress.
// Text from the wire is only ever set as textContent, or rendered by markdown.js.
import { renderMarkdown } from "./markdown.js";

const log = document.getElementById("log");
const empty = document.getElementById("empty");

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function nearBottom() { return log.scrollHeight - log.scrollTop - log.clientHeight < 80; }

function append(node, always = false) {
  const follow = always || nearBottom();
  empty.hidden = true;
  log.append(node);
  if (follow) log.scrollTop = log.scrollHeight;
  return node;
}

export function keepScrolled(action) {
  const follow = nearBottom();
  action();
  if (follow) log.scrollTop = log.scrollHeight;
}

export function clearLog() {
  log.replaceChildren(empty);
  empty.hidden = false;
}

export function systemLine(text) { return append(el("div", "msg system", text)); }
export function errorLine(text) { return append(el("div", "msg error", text)); }

export function fileChips(files) {
  const list = el("div", "files");
  for (const file of files) {
    if (file.thumb) {
      const img = el("img");
      img.src = file.thumb;
      img.alt = file.name;
      list.append(img);
    } else {
      list.append(el("span", "chip", "📄 " + file.name));
    }
  }
  return list;
}

export function userLine(text, files) {
  const node = el("div", "msg user", text);
  if (files && files.length) node.append(fileChips(files));
  return append(node, true);  // what the user just sent is always in view
}

/** One answer: the Markdown bubble (`.msg.agent`, answer text only), its tools, its timings. */
export class Answer {
  constructor(id, onStop) {
    this.id = id;
    this.text = "";
    this.tools = new Map();
    this.note = null;
    this.thinking = "";
    this.frame = 0;
    this.root = el("article", "turn");
    this.root.setAttribute("aria-label", "answer");
    this.bubble = el("div", "msg agent");
    this.progress = el("ul", "progress");
    this.progress.setAttribute("aria-label", "tool progress");
    this.progress.hidden = true;
    this.meta = el("p", "meta");
    this.root.append(this.bubble, this.progress, this.meta);
    this.onStop = onStop;
    append(this.root);
  }

  streaming(sentAt, firstAt) {
    this.bubble.classList.add("streaming");
    this.root.setAttribute("aria-busy", "true");
    this.sentAt = sentAt;
    this.firstAt = firstAt;
    this.showMeta();
  }

  restart() { this.text = ""; this.firstAt = null; this.bubble.replaceChildren(); this.showMeta(); }

  delta(piece) {
    if (!this.firstAt) { this.firstAt = Date.now(); this.showMeta(); }
    this.text += piece;
    if (!this.frame) {  // one render per frame, however fast the deltas come
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        keepScrolled(() => renderMarkdown(this.bubble, this.text));
      });
    }
  }

  finish(content, latencyMs, tools, files) {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.text = content;
    keepScrolled(() => renderMarkdown(this.bubble, content));
    this.bubble.classList.remove("streaming");
    this.root.removeAttribute("aria-busy");
    if (typeof latencyMs === "number") this.bubble.title = `${Math.round(latencyMs)} ms`;
    if (Array.isArray(tools) && tools.length && !this.tools.size) this.summary(tools);
    if (Array.isArray(files) && files.length) this.produced(files);
    const total = this.sentAt ? Date.now() - this.sentAt : null;
    this.showMeta(total);
    return { ttfd: this.firstAt && this.sentAt ? this.firstAt - this.sentAt : null, total };
  }

  stopped() {
    cancelAnimationFrame(this.frame);
    this.bubble.classList.remove("streaming");
    this.root.removeAttribute("aria-busy");
    if (!this.text) this.root.remove();
    else this.showMeta(this.sentAt ? Date.now() - this.sentAt : null);
  }

  showMeta(total, ttfd) {
    const first = ttfd ?? (this.firstAt && this.sentAt ? this.firstAt - this.sentAt : null);
    const parts = [];
    if (first !== null) parts.push(`first delta ${duration(first)}`);
    if (total !== undefined && total !== null) parts.push(`total ${duration(total)}`);
    else if (this.bubble.classList.contains("streaming")) parts.push(first === null ? "waiting for the agent…" : "answering…");
    this.meta.replaceChildren(el("span", "", parts.join(" · ")));
    if (this.bubble.classList.contains("streaming") && this.onStop) {
      const stop = el("button", "stop", "Stop");
      stop.type = "button";
      stop.setAttribute("aria-label", "Stop this answer");
      stop.addEventListener("click", () => this.onStop(this.id));
      this.meta.append(" ", stop);
    }
  }

  /** A live `agent_event`; unknown kinds change nothing. */
  event(ev) {
    const tool = ev.tool && typeof ev.tool === "object" ? ev.tool : {};
    const name = typeof tool.name === "string" ? tool.name : "tool";
    const key = typeof tool.id === "string" ? tool.id : name;
    if (ev.kind === "tool_started") {
      this.line(key, "", `running ${name}(${formatArgs(tool.args)})…`);
    } else if (ev.kind === "tool_finished") {
      const ms = typeof ev.ms === "number" ? ` in ${duration(ev.ms)}` : "";
      const line = this.line(key, "done", `${name} done${ms}`);
      if (typeof ev.result_preview === "string") line.title = ev.result_preview.slice(0, 500);
    } else if (ev.kind === "tool_failed") {
      const why = typeof ev.message === "string" ? `: ${ev.message.slice(0, 200)}` : "";
      this.line(key, "failed", `${name} failed${why}`);
    } else if (ev.kind === "reasoning" && typeof ev.text === "string") {
      this.thinking = (this.thinking + ev.text).slice(-2000);
      this.line("\u0000reasoning", "note", "thinking: " + this.thinking.slice(-160).trimStart());
    } else if (ev.kind === "status" && typeof ev.text === "string") {
      this.line("\u0000status", "note", ev.text.slice(0, 200));
    }
  }

  line(key, state, text) {
    let item = this.tools.get(key);
    if (!item) {
      item = el("li");
      this.tools.set(key, item);
      keepScrolled(() => { this.progress.append(item); this.progress.hidden = false; });
    }
    item.className = state;
    item.textContent = text;
    return item;
  }

  summary(tools) {
    tools.forEach((tool, i) => {
      if (!tool || typeof tool.name !== "string") return;
      const failed = ["failed", "error"].includes(tool.status);
      const ms = typeof tool.ms === "number" ? ` in ${duration(tool.ms)}` : "";
      this.line(`summary-${i}`, failed ? "failed" : "done", `${tool.name} ${failed ? "failed" : "done"}${ms}`);
    });
  }

  produced(files) {
    const list = el("div", "files");
    for (const file of files) {
      if (!file || typeof file.url !== "string") continue;
      const url = new URL(file.url, location.href);
      if (url.protocol !== "http:" && url.protocol !== "https:") continue;
      const link = el("a", "chip", "📎 " + (typeof file.name === "string" ? file.name : "file"));
      link.href = url.href;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      list.append(link);
    }
    if (list.childElementCount) this.root.insertBefore(list, this.meta);
  }
}

/** A stored answer, drawn again after a reload. */
export function storedAnswer(entry) {
  const answer = new Answer(entry.id, null);
  renderMarkdown(answer.bubble, entry.content);
  answer.text = entry.content;
  if (typeof entry.latency === "number") answer.bubble.title = `${Math.round(entry.latency)} ms`;
  if (Array.isArray(entry.tools) && entry.tools.length) answer.summary(entry.tools);
  answer.showMeta(entry.total, entry.ttfd);
  return answer;
}

export function duration(ms) {
  return ms < 1000 ? `${Math.max(0, Math.round(ms))} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function formatArgs(args) {
  if (!args || typeof args !== "object") return "";
  const text = Object.entries(args).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
  return text.length > 120 ? text.slice(0, 119) + "…" : text;
}
