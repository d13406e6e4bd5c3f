// Queues: depth by status per queue (GET /queues), refreshed by live events.

import { api, BASE, query } from "../api.js";
import { clear, h, num, table } from "../dom.js";

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
  ctx.main.append(h("h1", {}, "Queues"), holder);
  async function load() {
    const [data, pools] = await Promise.all([api("/queues"), api("/workers").catch(() => null)]);
    const link = (queue, status, n) => (n ? h("a", { href: `${BASE}/jobs${query({ q: `queue:${queue} status:${status}` })}` }, num(n)) : "0");
    const rows = data.queues.map((q) => h("tr", {},
      h("th", { scope: "row" }, h("a", { href: `${BASE}/jobs${query({ q: `queue:${q.queue}` })}` }, q.queue)),
      STATUSES.map((s) => h("td", { class: "num" }, link(q.queue, s, q[s]))),
      h("td", { class: "num" }, num(q.unserved)),
      h("td", { class: "num" }, num(q.total)),
    ));
    clear(holder).append(rows.length
      ? table("Jobs by status in each queue", ["Queue", ...STATUSES, "unserved", "total"], rows, { id: "queues", numeric: [...STATUSES, "unserved", "total"] })
      : h("p", { class: "muted" }, "No queue has jobs yet."),
      capacity(data, pools),
      h("p", { class: "hint" }, "unserved: pending jobs whose task no live worker has registered; they wait until one starts."));
  }
  await load();
  let timer = null;
  const off = ctx.live.on(() => { if (!timer) timer = setTimeout(() => { timer = null; load().catch(() => {}); }, 1000); });
  return () => { off(); if (timer) clearTimeout(timer); };
}
