// Building DOM nodes without innerHTML (text is always text: no markup from data).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function badge(status) {
  return h("span", { class: `badge ${status}` }, status);
}

export function announce(text) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

export function when(seconds) {
  if (seconds === null || seconds === undefined || seconds === 0) return "—";
  return new Date(seconds * 1000).toLocaleString();
}

export function ago(seconds, now = Date.now() / 1000) {
  if (!seconds) return "—";
  const d = Math.max(0, now - seconds);
  if (d < 60) return `${Math.round(d)} s ago`;
  if (d < 3600) return `${Math.round(d / 60)} min ago`;
  if (d < 86400) return `${(d / 3600).toFixed(1)} h ago`;
  return `${(d / 86400).toFixed(1)} d ago`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function num(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en");
}

export function table(caption, headers, rows, opts = {}) {
  const head = h("tr", {}, headers.map((name) => h("th", { scope: "col", class: opts.numeric?.includes(name) ? "num" : null }, name)));
  const body = h("tbody", {}, rows);
  return h("table", { id: opts.id || null }, h("caption", {}, caption), h("thead", {}, head), body);
}

export function errorBox(err) {
  const text = err && err.detail ? err.detail : String(err && err.message ? err.message : err);
  return h("p", { class: "error", role: "alert" }, text);
}
