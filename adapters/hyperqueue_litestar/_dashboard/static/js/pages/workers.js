// Workers: the pools alive on the storage, in every process and host (GET /workers).

import { api } from "../api.js";
import { ago, clear, h, num, table, when } from "../dom.js";

export async function render(ctx) {
  const holder = h("div");
  ctx.main.append(h("h1", {}, "Workers"), holder);
  async function load() {
    const data = await api("/workers");
    const rows = data.workers.map((w) => h("tr", {},
      h("th", { scope: "row" }, w.name),
      h("td", {}, `${w.host} (pid ${w.pid})`),
      h("td", {}, w.tasks.join(", ")),
      h("td", {}, w.queues ? w.queues.join(", ") : "all"),
      h("td", { class: "num" }, num(w.concurrency)),
      h("td", {}, when(w.started_at)),
      h("td", {}, ago(w.seen_at, data.now)),
    ));
    clear(holder).append(rows.length
      ? table("Worker pools alive on the storage", ["Name", "Host", "Tasks", "Queues", "Concurrency", "Started", "Last seen"], rows, { id: "workers", numeric: ["Concurrency"] })
      : h("p", { class: "muted" }, "No worker is alive on this storage."));
  }
  await load();
  const timer = setInterval(() => load().catch(() => {}), 5000);
  return () => clearInterval(timer);
}
