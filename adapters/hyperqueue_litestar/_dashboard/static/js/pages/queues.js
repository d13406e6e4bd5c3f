// Queues: depth by status per queue (GET /queues), refreshed by live events; which are
// paused, and pause or resume for operators (every worker, in every process, stops or
// starts claiming the queue's jobs).

import { api, BASE, query } from "../api.js";
import { announce, clear, errorBox, h, num, table } from "../dom.js";

const STATUSES = ["pending", "running", "completed", "failed", "cancelled"];

// Running jobs against the runners of every live pool (a pool's queues, else all).
function capacity(data, pools) {
  if (!pools) return null;
  const running = data.queues.reduce((n, q) => n + q.running, 0);
  const slots = pools.workers.reduce((n, w) => n + w.concurrency, 0);
  return h("p", { id: "capacity" }, `Running ${num(running)} of ${num(slots)} runner slots in ${num(pools.workers.length)} live worker ${pools.workers.length === 1 ? "pool" : "pools"}.`);
}

export async function render(ctx) {
  const holder = h("div");
  const status = h("div", { "aria-live": "polite" });
  ctx.main.append(h("h1", {}, "Queues"), status, holder);
  const operate = ctx.session && ctx.session.operate;
  async function act(name, verb) {
    status.replaceChildren();
    try {
      await api(`/queues/${encodeURIComponent(name)}/${verb}`, { method: "POST" });
      announce(`${name}: ${verb}d`);
      await load();
    } catch (err) { status.append(errorBox(err)); }
  }
  async function load() {
    const [data, pools] = await Promise.all([api("/queues"), api("/workers").catch(() => null)]);
    const link = (queue, status, n) => (n ? h("a", { href: `${BASE}/jobs${query({ q: `queue:${queue} status:${status}` })}` }, num(n)) : "0");
    const rows = data.queues.map((q) => h("tr", {},
      h("th", { scope: "row" }, h("a", { href: `${BASE}/jobs${query({ q: `queue:${q.queue}` })}` }, q.queue)),
      STATUSES.map((s) => h("td", { class: "num" }, link(q.queue, s, q[s]))),
      h("td", { class: "num" }, num(q.unserved)),
      h("td", { class: "num" }, num(q.total)),
      h("td", {}, q.paused ? h("strong", { class: "paused" }, "paused") : "active"),
      operate ? h("td", {}, h("button", { type: "button", class: "button ghost", onclick: () => act(q.queue, q.paused ? "resume" : "pause") }, `${q.paused ? "Resume" : "Pause"} ${q.queue}`)) : null,
    ));
    const headers = ["Queue", ...STATUSES, "unserved", "total", "State", ...(operate ? ["Action"] : [])];
    clear(holder).append(rows.length
      ? table("Jobs by status in each queue", headers, rows, { id: "queues", numeric: [...STATUSES, "unserved", "total"] })
      : h("p", { class: "muted" }, "No queue has jobs yet."),
      capacity(data, pools),
      h("p", { class: "hint" }, "unserved: pending jobs whose task no live worker has registered; they wait until one starts. A paused queue keeps its jobs: no worker claims them until it is resumed; running ones finish."));
  }
  await load();
  let timer = null;
  const off = ctx.live.on(() => { if (!timer) timer = setTimeout(() => { timer = null; load().catch(() => {}); }, 1000); });
  return () => { off(); if (timer) clearTimeout(timer); };
}
