// Small DOM helpers. Untrusted text only ever goes through textContent / attributes, never HTML.

export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const SVG = "http://www.w3.org/2000/svg";

// Icons as SVG paths (24×24), drawn with createElementNS: no markup strings.
const ICONS = {
  heart: "M12 21s-7.5-4.6-9.6-9.2C.9 8.4 3 4.5 6.8 4.5c2.1 0 3.5 1.1 4.2 2.3h2c.7-1.2 2.1-2.3 4.2-2.3 3.8 0 5.9 3.9 4.4 7.3C19.5 16.4 12 21 12 21z",
  comment: "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z",
  share: "M14 4l7 7-7 7v-4c-6 0-9 2-11 6 1-6 4-11 11-12V4z",
  sound: "M9 18V6l11-2v12M9 18a3 3 0 1 1-3-3 3 3 0 0 1 3 3zm11-2a3 3 0 1 1-3-3 3 3 0 0 1 3 3z",
  muted: "M3 9h4l5-4v14l-5-4H3zM16 9l5 6M21 9l-5 6",
  unmuted: "M3 9h4l5-4v14l-5-4H3zM16 8a5 5 0 0 1 0 8M18.5 5.5a9 9 0 0 1 0 13",
  play: "M7 4l13 8-13 8z",
  home: "M3 11l9-8 9 8v9a1 1 0 0 1-1 1h-5v-6H9v6H4a1 1 0 0 1-1-1z",
  search: "M10.5 3a7.5 7.5 0 1 1 0 15 7.5 7.5 0 0 1 0-15zM16 16l5 5",
  plus: "M12 4v16M4 12h16",
  bell: "M6 17V11a6 6 0 0 1 12 0v6l2 2H4zM10 21h4",
  user: "M12 12a4.5 4.5 0 1 0 0-9 4.5 4.5 0 0 0 0 9zM3.5 21a8.5 8.5 0 0 1 17 0z",
  chart: "M4 20V10M10 20V4M16 20v-7M22 20H2",
};

export function icon(name, label) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", `icon icon-${name}`);
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", ICONS[name] || ICONS.play);
  svg.append(path);
  if (!label) return svg;
  return [svg, h("span", { class: "visually-hidden", text: label })];
}

export function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

export function formatCount(value) {
  const n = Number(value) || 0;
  if (n < 1000) return String(n);
  if (n < 1e6) return `${(n / 1000).toFixed(n < 1e4 ? 1 : 0).replace(/\.0$/, "")}K`;
  return `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0).replace(/\.0$/, "")}M`;
}

export function timeAgo(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (!Number.isFinite(seconds)) return "";
  for (const [unit, size] of [["y", 31536000], ["w", 604800], ["d", 86400], ["h", 3600], ["m", 60]]) {
    if (seconds >= size) return `${Math.floor(seconds / size)}${unit} ago`;
  }
  return "just now";
}

// A caption with #hashtags and @mentions turned into in-app links.
const TOKEN = /([#＃][\p{L}\p{N}_]+|@[A-Za-z0-9_.]+)/gu;

export function richText(text, className = "caption") {
  const node = h("p", { class: className });
  let last = 0;
  for (const match of (text || "").matchAll(TOKEN)) {
    node.append(document.createTextNode(text.slice(last, match.index)));
    const token = match[0];
    const name = token.slice(1).replace(/\.$/, "");
    const href = token.startsWith("@") ? `/u/${encodeURIComponent(name)}` : `/tag/${encodeURIComponent(name.toLowerCase())}`;
    node.append(h("a", { href, class: "token", "data-link": true, text: token }));
    last = match.index + token.length;
  }
  node.append(document.createTextNode((text || "").slice(last)));
  return node;
}

let toastTimer = 0;

export function toast(message, { error = false } = {}) {
  const root = document.getElementById("toast");
  if (!root) return;
  root.textContent = message;
  root.classList.toggle("error", error);
  root.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { root.hidden = true; }, error ? 6000 : 2500);
}

export function errorBox(error, retry) {
  const message = (error && error.message) || "Something went wrong.";
  return h("div", { class: "error-box", role: "alert" },
    h("p", { text: message }),
    retry ? h("button", { type: "button", class: "btn", onclick: retry, text: "Try again" }) : null);
}

export function spinner(label = "Loading…") {
  return h("div", { class: "loading", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), label);
}

// A bottom sheet (dialog) with focus kept inside and Escape to close.
export function openSheet(title, content, { onClose } = {}) {
  const root = document.getElementById("sheet-root");
  const previous = document.activeElement;
  const closeButton = h("button", { type: "button", class: "icon-btn sheet-close", "aria-label": "Close", text: "×" });
  const heading = h("h2", { class: "sheet-title", id: `sheet-${Date.now()}`, text: title });
  const panel = h("section", { class: "sheet", role: "dialog", "aria-modal": "true", "aria-labelledby": heading.id },
    h("header", { class: "sheet-head" }, heading, closeButton), content);
  const backdrop = h("div", { class: "sheet-backdrop" }, panel);
  function close() {
    backdrop.remove();
    document.removeEventListener("keydown", onKey);
    if (onClose) onClose();
    if (previous && previous.focus) previous.focus();
  }
  function onKey(event) {
    if (event.key === "Escape") close();
  }
  closeButton.addEventListener("click", close);
  backdrop.addEventListener("click", (event) => { if (event.target === backdrop) close(); });
  document.addEventListener("keydown", onKey);
  root.append(backdrop);
  closeButton.focus();
  return { close, panel };
}

// Client-side navigation from any module (main.js listens to popstate and routes).
export function go(path, { replace = false } = {}) {
  if (replace) history.replaceState({}, "", path);
  else history.pushState({}, "", path);
  window.dispatchEvent(new PopStateEvent("popstate"));
}
