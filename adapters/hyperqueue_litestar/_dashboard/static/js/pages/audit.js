// Audit log (admin keys): every change and every refusal, oldest first, paged by seq.

import { api, BASE, query } from "../api.js";
import { clear, h, table, when } from "../dom.js";

export async function render(ctx) {
  const after = Number(ctx.params.get("after") || 0);
  const data = await api(`/audit${query({ after, limit: 100 })}`);
  const rows = data.items.map((r) => h("tr", {},
    h("td", { class: "num" }, String(r.seq)),
    h("td", {}, when(r.at)),
    h("td", {}, r.event),
    h("td", {}, r.actor.type === "key" ? `key ${r.actor.id}` : `anonymous ${r.actor.ip || ""}`),
    h("td", {}, r.action),
    h("td", {}, r.resource || ""),
    h("td", {}, r.result),
    h("td", {}, h("code", {}, Object.keys(r.metadata || {}).length ? JSON.stringify(r.metadata) : "")),
  ));
  const holder = h("div");
  clear(holder).append(rows.length ? table("Audit records, oldest first", ["Seq", "At", "Event", "Actor", "Action", "Resource", "Result", "Details"], rows, { id: "audit" }) : h("p", { class: "muted" }, "No record yet."));
  const pager = h("nav", { class: "pager", "aria-label": "Audit pages" },
    after ? h("a", { href: `${BASE}/audit` }, "First page") : null,
    data.next_after ? h("a", { href: `${BASE}/audit${query({ after: data.next_after })}` }, "Next page") : null);
  ctx.main.append(h("h1", {}, "Audit log"), holder, pager);
}
