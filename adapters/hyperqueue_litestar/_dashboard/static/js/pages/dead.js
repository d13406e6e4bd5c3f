// Dead letters, grouped by error fingerprint: the count of each group, and retry or
// discard per group or for any filter, with the exact count confirmed first.

import { api, ApiError, BASE, query } from "../api.js";
import { bulk } from "../confirm.js";
import { ago, clear, errorBox, h, num, table } from "../dom.js";

export async function render(ctx) {
  const operate = ctx.session && ctx.session.operate;
  const holder = h("div");
  const message = h("div", { "aria-live": "polite", id: "dead-message" });
  ctx.main.append(h("h1", {}, "Dead letters"), message);

  async function run(action, q) {
    message.replaceChildren();
    try {
      const result = await bulk(action, q);
      if (result && result.count) {
        message.append(h("p", { class: "notice", role: "status" }, `${num(result.count)} ${result.count === 1 ? "job" : "jobs"} ${action === "retry" ? "retried" : "discarded"}.`));
        await load();
      }
    } catch (err) { message.append(errorBox(err)); }
  }

  if (operate) {
    const input = h("input", { type: "text", id: "bulk-q", value: "status:failed", "aria-describedby": "bulk-hint", spellcheck: "false" });
    ctx.main.append(h("section", { "aria-labelledby": "bulk-h", class: "card" },
      h("h2", { id: "bulk-h" }, "By filter"),
      h("div", { class: "filter" },
        h("div", { class: "field" }, h("label", { for: "bulk-q" }, "Jobs matching"), input,
          h("span", { id: "bulk-hint", class: "hint" }, "The jobs page's query language; retry takes failed and cancelled jobs.")),
        h("button", { type: "button", class: "button", id: "bulk-q-retry", onclick: () => run("retry", input.value.trim()) }, "Retry…"),
        h("button", { type: "button", class: "button danger", id: "bulk-q-discard", onclick: () => run("discard", input.value.trim()) }, "Discard…"),
      )));
  }
  ctx.main.append(holder);

  async function load() {
    let data;
    try {
      data = await api("/dead-letters/groups");
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return loadPlain();
      throw err;
    }
    const rows = data.groups.map((g) => {
      const q = `fingerprint:${g.fingerprint}`;
      return h("tr", { "data-fingerprint": g.fingerprint },
        h("td", {}, h("a", { href: `${BASE}/jobs${query({ q })}` }, h("code", {}, g.fingerprint))),
        h("td", {}, g.task),
        h("td", {}, g.error_type),
        h("td", {}, g.message),
        h("td", { class: "num" }, num(g.count)),
        h("td", {}, ago(g.last_at)),
        h("td", {}, h("a", { href: `${BASE}/jobs/${encodeURIComponent(g.sample_job_id)}` }, "sample")),
        operate ? h("td", {}, h("div", { class: "actions" },
          h("button", { type: "button", class: "button", "aria-label": `Retry the ${g.task} group ${g.fingerprint}`, onclick: () => run("retry", q) }, "Retry…"),
          h("button", { type: "button", class: "button danger", "aria-label": `Discard the ${g.task} group ${g.fingerprint}`, onclick: () => run("discard", q) }, "Discard…"))) : null,
      );
    });
    const headers = ["Fingerprint", "Task", "Error", "Message", "Jobs", "Last", "Example", ...(operate ? ["Actions"] : [])];
    clear(holder).append(rows.length
      ? table("Failed jobs grouped by error", headers, rows, { id: "groups", numeric: ["Jobs"] })
      : h("p", { class: "muted", id: "no-groups" }, "No dead letters."));
    return undefined;
  }

  async function loadPlain() {
    const page = await api("/dead-letters?limit=100");
    const rows = page.items.map((j) => h("tr", {},
      h("td", {}, h("a", { href: `${BASE}/jobs/${encodeURIComponent(j.id)}` }, h("code", {}, j.id))),
      h("td", {}, j.task), h("td", {}, j.error || ""), h("td", {}, ago(j.finished_at))));
    clear(holder).append(rows.length ? table("Failed jobs, newest first", ["Job", "Task", "Error", "Failed"], rows, { id: "groups" }) : h("p", { class: "muted", id: "no-groups" }, "No dead letters."));
  }

  try { await load(); } catch (err) { holder.append(errorBox(err)); }
  let timer = null;
  const off = ctx.live.on((batch) => {
    if (!batch.poll && !batch.events.some((e) => e.type === "job.failed" || e.job.status !== "failed")) return;
    if (!timer) timer = setTimeout(() => { timer = null; load().catch(() => {}); }, 1000);
  });
  return () => { off(); if (timer) clearTimeout(timer); };
}
