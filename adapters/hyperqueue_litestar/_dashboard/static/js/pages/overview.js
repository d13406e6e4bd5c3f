// Overview: health, backlog, throughput and failure rate over time, latencies, top
// failing tasks, the most throttled tasks (jobs a rate limit or an open breaker held back
// without spending an attempt: `job.deferred` in the log, every process's). Figures from GET /insights (the storage's event log), refreshed on
// live events (at most every 5 s) and every 30 s.

import { api, BASE, query } from "../api.js";
import { lineChart } from "../charts.js";
import { badge, clear, duration, errorBox, h, num, table } from "../dom.js";

const WINDOWS = [["900", "15 minutes"], ["3600", "1 hour"], ["21600", "6 hours"], ["86400", "24 hours"]];

function tile(label, value, extra) {
  return h("li", {}, h("span", { class: "figure" }, value), h("span", { class: "label" }, label), extra || null);
}

export async function render(ctx) {
  const windowSel = h("select", { id: "window" }, WINDOWS.map(([v, t]) => h("option", { value: v, selected: (ctx.params.get("window") || "3600") === v }, t)));
  const body = h("div", { id: "overview-body" });
  ctx.main.append(
    h("h1", {}, "Overview"),
    h("div", { class: "filter" }, h("div", {}, h("label", { for: "window" }, "Time window "), windowSel)),
    body,
  );
  windowSel.addEventListener("change", () => ctx.navigate(`${BASE}${query({ window: windowSel.value })}`, { replace: true }));
  let last = 0;
  let busy = false;

  async function load() {
    if (busy) return;
    busy = true;
    last = Date.now();
    const win = Number(windowSel.value);
    try {
      const [health, insights] = await Promise.all([
        api("/health", { root: true }).catch((err) => ({ status: "unhealthy", checks: {}, error: err })),
        api(`/insights${query({ window: win, buckets: 60 })}`).catch((err) => ({ error: err })),
      ]);
      draw(health, insights);
    } finally {
      busy = false;
    }
  }

  function draw(health, insights) {
    const nodes = [];
    const checks = Object.entries(health.checks || {});
    nodes.push(h("section", { "aria-labelledby": "health-h" },
      h("h2", { id: "health-h" }, "Health ", badge(health.status || "unhealthy")),
      h("ul", { class: "strip", id: "health-strip" }, checks.map(([name, c]) =>
        h("li", {}, h("span", { class: "label" }, name), " ", badge(c.status), c.message ? h("span", { class: "hint" }, ` ${c.message}`) : null))),
    ));
    if (insights.error) {
      nodes.push(errorBox(insights.error));
      clear(body).append(...nodes);
      return;
    }
    const s = insights.summary;
    nodes.push(h("section", { "aria-labelledby": "figures-h" },
      h("h2", { id: "figures-h" }, "Now and over the window"),
      h("ul", { class: "strip", id: "figures" },
        tile("pending (backlog)", num(s.pending)),
        tile("running", num(s.running)),
        tile("oldest pending", duration(s.oldest_pending_age)),
        tile("throughput / min", s.throughput_per_minute.toFixed(1)),
        tile("failure rate", s.failure_rate === null ? "—" : `${(s.failure_rate * 100).toFixed(1)}%`),
        tile("wait p50 / p95", `${duration(s.wait_p50)} / ${duration(s.wait_p95)}`),
        tile("run p50 / p95", `${duration(s.run_p50)} / ${duration(s.run_p95)}`),
        tile("completed", num(s.completed)),
        tile("failed", num(s.failed)),
        tile("retried", num(s.retried)),
        // a server older than issue 13 sends no `deferred`: leave the tile out
        s.deferred === undefined ? null : tile("throttled (held back, no attempt spent)", num(s.deferred)),
      ),
      insights.truncated ? h("p", { class: "hint" }, `Figures cover the newest ${num(insights.events_read)} events only.`) : null,
    ));
    const times = insights.series.map((b) => b.end);
    const perMin = 60 / insights.bucket_seconds;
    const rate = insights.series.map((b) => (b.completed + b.failed ? b.failed / (b.completed + b.failed) : null));
    nodes.push(h("section", { "aria-labelledby": "charts-h" },
      h("h2", { id: "charts-h" }, "Over time"),
      h("div", { class: "grid" },
        lineChart({ title: "Throughput (jobs per minute)", times, series: [
          { name: "completed", values: insights.series.map((b) => b.completed * perMin) },
          { name: "failed", values: insights.series.map((b) => b.failed * perMin) },
          { name: "enqueued", values: insights.series.map((b) => b.enqueued * perMin) },
        ] }),
        lineChart({ title: "Failure rate", unit: "%", times, series: [{ name: "failed / finished", values: rate, cls: "s2" }] }),
        lineChart({ title: "Latency p95 (seconds)", times, series: [
          { name: "wait p95", values: insights.series.map((b) => b.wait_p95) },
          { name: "run p95", values: insights.series.map((b) => b.run_p95), cls: "s3" },
        ] }),
      ),
    ));
    const rows = insights.top_failing.map((t) => h("tr", {},
      h("td", {}, h("a", { href: `${BASE}/jobs${query({ q: `status:failed task:${t.task}` })}` }, t.task)),
      h("td", { class: "num" }, num(t.failed)),
      h("td", { class: "num" }, t.failure_rate === null ? "—" : `${(t.failure_rate * 100).toFixed(1)}%`),
      h("td", {}, h("code", {}, t.last_error || "")),
    ));
    nodes.push(h("section", { "aria-labelledby": "failing-h" },
      h("h2", { id: "failing-h" }, "Top failing tasks"),
      rows.length ? table("Tasks with final failures in the window", ["Task", "Failed", "Failure rate", "Last error"], rows, { numeric: ["Failed", "Failure rate"], id: "top-failing" })
        : h("p", { class: "muted" }, "No task failed in this window."),
    ));
    if (insights.most_throttled) {
      const held = insights.most_throttled.map((t) => h("tr", {},
        h("td", {}, h("a", { href: `${BASE}/jobs${query({ q: `task:${t.task}` })}` }, t.task)),
        h("td", { class: "num" }, num(t.deferred)),
        h("td", { class: "num" }, num(t.runs)),
        h("td", { class: "num" }, `${(t.share * 100).toFixed(1)}%`),
      ));
      nodes.push(h("section", { "aria-labelledby": "throttled-h" },
        h("h2", { id: "throttled-h" }, "Most throttled tasks"),
        held.length ? table("Jobs held back by a rate limit or an open breaker; no attempt spent", ["Task", "Held back", "Runs", "Share held back"], held, { numeric: ["Held back", "Runs", "Share held back"], id: "most-throttled" })
          : h("p", { class: "muted", id: "no-throttled" }, "No job was held back by a rate limit or an open breaker in this window."),
      ));
    }
    if (insights.breakers && insights.breakers.length) {
      nodes.push(h("section", { "aria-labelledby": "breakers-h" }, h("h2", { id: "breakers-h" }, "Circuit breakers"),
        table("Breakers of this server process", ["Name", "State", "Trips"], insights.breakers.map((b) =>
          h("tr", {}, h("td", {}, b.name), h("td", {}, b.state), h("td", { class: "num" }, num(b.trips)))), { numeric: ["Trips"] })));
    }
    clear(body).append(...nodes);
  }

  await load();
  const off = ctx.live.on(() => { if (Date.now() - last > 5000) load(); });
  const timer = setInterval(load, 30000);
  return () => { off(); clearInterval(timer); };
}
