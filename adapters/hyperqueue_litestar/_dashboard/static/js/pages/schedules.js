// Schedules: periodic jobs with their next slot; pause and resume for operators.

import { api } from "../api.js";
import { announce, clear, errorBox, h, table, when } from "../dom.js";

export async function render(ctx) {
  const holder = h("div");
  const status = h("div", { "aria-live": "polite" });
  ctx.main.append(h("h1", {}, "Schedules"), status, holder);
  const operate = ctx.session && ctx.session.operate;
  async function act(name, verb) {
    status.replaceChildren();
    try {
      await api(`/schedules/${encodeURIComponent(name)}/${verb}`, { method: "POST" });
      announce(`${name}: ${verb}d`);
      await load();
    } catch (err) { status.append(errorBox(err)); }
  }
  async function load() {
    const data = await api("/schedules");
    const rows = data.schedules.map((s) => h("tr", {},
      h("th", { scope: "row" }, s.name),
      h("td", {}, s.task),
      h("td", {}, s.cron ? `cron ${s.cron}` : s.every ? `every ${s.every} s` : "—"),
      h("td", {}, s.paused ? "paused" : "active"),
      h("td", {}, when(s.next_at)),
      h("td", {}, String(s.missed ?? 0)),
      operate ? h("td", {}, h("button", { type: "button", class: "button ghost", onclick: () => act(s.name, s.paused ? "resume" : "pause") }, `${s.paused ? "Resume" : "Pause"} ${s.name}`)) : null,
    ));
    const headers = ["Name", "Task", "When", "State", "Next run", "Missed", ...(operate ? ["Action"] : [])];
    clear(holder).append(rows.length ? table("Periodic jobs", headers, rows, { id: "schedules" }) : h("p", { class: "muted" }, "No periodic job is defined."));
  }
  await load();
}
