// Answers are Markdown: marked turns them into HTML, DOMPurify keeps only the elements Markdown
// makes, and the result is inserted as nodes. Raw HTML in an answer is shown as text, never
// parsed (marked's `html` tokens are escaped); images become links (the page loads nothing from
// other hosts); every link opens in a new tab without access to this one.
const { Marked } = window.marked;
const purify = window.DOMPurify;

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const markdown = new Marked({ gfm: true, breaks: false });
markdown.use({
  renderer: {
    html: ({ text, block }) => (block ? `<p>${escapeHtml(text.trim())}</p>` : escapeHtml(text)),
    image: ({ href, text }) => `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`,
  },
});

const SANITIZE = {
  ALLOWED_TAGS: [
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "input", "li", "ol", "p", "pre", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
  ],
  ALLOWED_ATTR: ["href", "title", "align", "start", "class", "type", "checked", "disabled"],
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
  if (node.hasAttribute("class")) {  // only a fenced block's language survives
    const keep = node.tagName === "CODE" && /^language-[\w+#.-]{1,32}$/.test(node.getAttribute("class"));
    if (!keep) node.removeAttribute("class");
  }
  if (node.tagName === "INPUT") {  // a task list's box, and nothing else a user could type into
    if (node.getAttribute("type") !== "checkbox") node.remove();
    else node.setAttribute("disabled", "");
  }
});

function decorate(fragment) {
  for (const pre of fragment.querySelectorAll("pre")) {
    const box = document.createElement("div");
    box.className = "code";
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", "Copy code");
    pre.replaceWith(box);
    box.append(copy, pre);
  }
  for (const table of fragment.querySelectorAll("table")) {
    const box = document.createElement("div");
    box.className = "table";
    box.tabIndex = 0;  // a wide table scrolls by keyboard too
    box.setAttribute("role", "region");
    box.setAttribute("aria-label", "table");
    table.replaceWith(box);
    box.append(table);
  }
  for (const node of [...fragment.childNodes]) {
    if (node.nodeType === Node.TEXT_NODE && !node.textContent.trim()) node.remove();
  }
  return fragment;
}

/** Replace `element`'s children with the answer `text` rendered as safe Markdown. */
export function renderMarkdown(element, text) {
  const fragment = purify.sanitize(markdown.parse(text), SANITIZE);
  element.replaceChildren(decorate(fragment));
}

/** Copy a code block's text; says so on the button. */
export async function copyCode(button) {
  const code = button.parentElement.querySelector("pre").textContent;
  let ok = false;
  try {
    await navigator.clipboard.writeText(code);
    ok = true;
  } catch {
    const range = document.createRange();  // http on another host: no async clipboard
    range.selectNodeContents(button.parentElement.querySelector("pre"));
    const selection = getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    ok = document.execCommand("copy");
    selection.removeAllRanges();
  }
  button.textContent = ok ? "Copied" : "Press Ctrl+C";
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}
