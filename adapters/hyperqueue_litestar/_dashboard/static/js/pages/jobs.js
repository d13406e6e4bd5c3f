// Jobs: the query language in the URL (?q=), an exact count, keyset pages, rows that
// update in place from the live stream, and new matches offered ("3 new, show") rather
// than pushed in under the pointer.

import { api, ApiError, BASE, query } from "../api.js";
import { bulk } from "../confirm.js";
import { ago, announce, append, badge, clear, errorBox, h, num, table } from "../dom.js";

const LIMIT = 50;
const HEADERS = ["Job", "Task", "Queue", "Status", "Attempts", "Tenant", "Created"];

function cells(job) {
  return [
    h("td", {}, h("a", { href: `${BASE}/jobs/${encodeURIComponent(job.id)}` }, h("code", {}, job.id))),
    h("td", {}, job.task),
    h("td", {}, job.queue),
    h("td", {}, badge(job.status)),
    h("td", { class: "num" }, `${job.attempts}/${job.max_attempts}`),
    h("td", {}, job.tenant || ""),
    h("td", { title: new Date(job.created_at * 1000).toISOString() }, ago(job.created_at)),
  ];
}

export async function render(ctx) {
  const q = ctx.params.get("q") || "";
  const cursor = ctx.params.get("cursor") || "";
  const input = h("input", { type: "search", id: "q", name: "q", value: q, "aria-describedby": "q-hint", autocomplete: "off", spellcheck: "false" });
  const form = h("form", { class: "filter", role: "search" },
    h("div", { class: "field" },
      h("label", { for: "q" }, "Filter"),
      input,
      h("span", { id: "q-hint", class: "hint" }, "e.g. status:failed queue:email task:send_* tenant:acme error:\"Timeout\" since:1h"),
    ),
    h("button", { type: "submit", class: "button" }, "Search"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.navigate(`${BASE}/jobs${query({ q: input.value.trim() })}`);
  });
  const countEl = h("p", { id: "match-count", "aria-live": "polite" });
  const notice = h("div", { id: "new-notice", "aria-live": "polite" });
  const message = h("div", { "aria-live": "polite" });
  const holder = h("div");
  const pager = h("nav", { class: "pager", "aria-label": "Job pages" });
  const actions = h("div", { class: "actions", id: "bulk-actions" });
  ctx.main.append(h("h1", {}, "Jobs"), form, countEl, actions, message, notice, holder, pager);

  const rows = new Map();  // job id -> <tr>
  let shown = [];
  let newest = 0;

  function showPage(page, fresh = new Set()) {
    rows.clear();
    shown = page.items;
    newest = Math.max(0, ...page.items.map((j) => j.created_at));
    const trs = page.items.map((job) => {
      const tr = h("tr", { "data-id": job.id, class: fresh.has(job.id) ? "fresh" : null }, cells(job));
      rows.set(job.id, tr);
      return tr;
    });
    clear(holder).append(trs.length
      ? table(q ? `Jobs matching ${q}, newest first` : "Jobs, newest first", HEADERS, trs, { id: "jobs", numeric: ["Attempts"] })
      : h("p", { class: "muted", id: "no-jobs" }, "No job matches."));
    append(clear(pager), [
      cursor ? h("a", { href: `${BASE}/jobs${query({ q })}` }, "Newest") : null,
      page.next_cursor ? h("a", { href: `${BASE}/jobs${query({ q, cursor: page.next_cursor })}`, rel: "next" }, "Older") : null,
    ]);
  }

  async function count() {
    try {
      const data = await api(`/jobs/count${query({ q })}`);
      countEl.textContent = `${num(data.count)} ${data.count === 1 ? "job matches" : "jobs match"}.`;
    } catch (err) {
      if (!(err instanceof ApiError && (err.status === 404 || err.status === 405))) countEl.textContent = "";
    }
  }

  let page;
  try {
    page = await api(`/jobs${query({ q, cursor, limit: LIMIT })}`);
  } catch (err) {
    holder.append(errorBox(err));
    return undefined;
  }
  showPage(page);
  count();

  if (ctx.session && ctx.session.operate) {
    const run = async (action) => {
      message.replaceChildren();
      try {
        const result = await bulk(action, q);
        if (result) { count(); refresh(); }
      } catch (err) { message.append(errorBox(err)); }
    };
    actions.append(
      h("button", { type: "button", class: "button ghost", id: "bulk-retry", onclick: () => run("retry") }, "Retry matching…"),
      h("button", { type: "button", class: "button ghost", id: "bulk-cancel", onclick: () => run("cancel") }, "Cancel matching…"),
      h("button", { type: "button", class: "button ghost", id: "bulk-discard", onclick: () => run("discard") }, "Discard matching…"),
    );
  }

  let waiting = [];
  let checking = false;
  async function refresh() {
    // the first page again: rows shown update in place, unseen newer ones are offered
    if (checking) return;
    checking = true;
    try {
      const top = await api(`/jobs${query({ q, limit: LIMIT })}`);
      for (const job of top.items) {
        const tr = rows.get(job.id);
        if (tr) tr.replaceChildren(...cells(job));
      }
      if (cursor) return;
      waiting = top.items.filter((j) => !rows.has(j.id) && (j.created_at >= newest || !shown.length));
      if (!waiting.length) { notice.replaceChildren(); return; }
      const n = waiting.length >= LIMIT ? `${LIMIT}+` : String(waiting.length);
      notice.replaceChildren(h("p", { class: "notice" }, `${n} new ${waiting.length === 1 ? "job" : "jobs"}.`,
        h("button", { type: "button", class: "button", id: "show-new", onclick: () => {
          const fresh = new Set(waiting.map((j) => j.id));
          notice.replaceChildren();
          showPage(top, fresh);
          count();
          announce(`${fresh.size} new jobs shown.`);
          const first = holder.querySelector("tbody a");
          if (first) first.focus();
        } }, "Show")));
    } catch { /* the next event or poll tries again */ } finally {
      checking = false;
    }
  }

  const off = ctx.live.on((batch) => {
    let unseen = batch.poll || batch.gap;
    for (const event of batch.events) {
      const tr = rows.get(event.job.id);
      if (tr) tr.replaceChildren(...cells(event.job));
      else unseen = true;
    }
    if (unseen) refresh();
    if (batch.events.length) count();
  });
  return off;
}
