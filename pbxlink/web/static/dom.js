// Small DOM helpers. Data only ever goes in through textContent or attributes, never as HTML:
// a caller's name or a CRM note is text, whatever characters it holds.

export const $ = (selector, root = document) => root.querySelector(selector);

/** An element with text and attributes; children are nodes or strings (as text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

/** The element marked data-f="name" inside a card (the template's fields). */
export const field = (root, name) => root.querySelector(`[data-f="${name}"]`);

/** Set a field's text and hide it (or the element given) when there is nothing to show. */
export function show(node, text, box = node) {
  const value = text === null || text === undefined ? "" : String(text);
  node.textContent = value;
  box.hidden = value === "";
}

const COLOR = /^#[0-9a-fA-F]{6}$/;

/** A category colour from the API, or null: it reaches CSS, so only #rrggbb passes. */
export const safeColor = (value) => (typeof value === "string" && COLOR.test(value) ? value : null);

/** Black or white text, whichever reads better on `hex`. */
export function inkFor(hex) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
  const lum = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  return lum > 0.55 ? "#111827" : "#ffffff";
}

export function formatTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function formatDateTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

/** 75 -> "1:15", 3700 -> "1:01:40". */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** YYYY-MM-DD of a Date in the browser's time zone (what <input type=date> holds). */
export function localDay(date = new Date()) {
  const y = date.getFullYear();
  const m = String(date.getMonth() + 1).padStart(2, "0");
  const d = String(date.getDate()).padStart(2, "0");
  return `${y}-${m}-${d}`;
}
