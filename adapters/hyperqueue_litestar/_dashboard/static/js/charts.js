// Small SVG line charts drawn from data, with no library and no inline style (the
// content security policy forbids it): geometry in attributes, colours from CSS classes.

import { h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const W = 480, H = 200, PAD_L = 44, PAD_R = 8, PAD_T = 8, PAD_B = 22;

function svg(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function label(value, unit) {
  if (unit === "%") return `${Math.round(value * 100)}%`;
  if (value >= 1000) return `${(value / 1000).toFixed(1)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

// times: seconds since the epoch; series: [{name, values, cls}] of the same length.
export function lineChart({ title, times, series, unit = "" }) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  const last = series.map((s) => `${s.name} ${label(s.values.at(-1) ?? 0, unit)}`).join(", ");
  root.setAttribute("aria-label", `${title}: ${times.length} points; latest ${last || "none"}`);
  const max = Math.max(unit === "%" ? 0.05 : 1, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
  const x = (i) => PAD_L + (times.length < 2 ? 0 : (i / (times.length - 1)) * (W - PAD_L - PAD_R));
  const y = (v) => H - PAD_B - (v / max) * (H - PAD_T - PAD_B);
  root.append(svg("line", { x1: PAD_L, y1: H - PAD_B, x2: W - PAD_R, y2: H - PAD_B, class: "axis" }));
  root.append(svg("line", { x1: PAD_L, y1: PAD_T, x2: PAD_L, y2: H - PAD_B, class: "axis" }));
  for (const v of [0, max / 2, max]) {
    const t = svg("text", { x: PAD_L - 4, y: y(v) + 4, "text-anchor": "end" });
    t.textContent = label(v, unit);
    root.append(t);
  }
  if (times.length) {
    for (const [i, anchor] of [[0, "start"], [times.length - 1, "end"]]) {
      const t = svg("text", { x: x(i), y: H - 6, "text-anchor": anchor });
      t.textContent = new Date(times[i] * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      root.append(t);
    }
  }
  series.forEach((s, n) => {
    const points = s.values.map((v, i) => (v === null ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`)).filter(Boolean);
    const cls = s.cls || `s${n + 1}`;
    if (points.length > 1) root.append(svg("polyline", { points: points.join(" "), class: cls }));
    s.values.forEach((v, i) => {  // a dot per point: one bucket alone still shows
      if (v !== null && v > 0) root.append(svg("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 2.5, class: `${cls} dot` }));
    });
  });
  const legend = h("ul", { class: "legend" }, series.map((s, n) => h("li", {}, h("span", { class: `key k${(s.cls || `s${n + 1}`).slice(1)}` }), s.name)));
  return h("figure", { class: "card" }, h("figcaption", {}, h("strong", {}, title)), root, legend);
}
