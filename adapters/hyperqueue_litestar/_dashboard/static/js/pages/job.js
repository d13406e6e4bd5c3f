// One job: facts, timeline, progress, error and traceback, arguments and result, the
// trace id when tracing was on; cancel or retry for operators; live while open.

import { api, BASE } from "../api.js";
import { announce, append, badge, clear, errorBox, h, when } from "../dom.js";

function json(value) {
  return h("pre", {}, JSON.stringify(value, null, 2));
}

function traceId(headers) {
  const parent = headers && headers.traceparent;
  const parts = parent ? parent.split("-") : [];
  return parts.length === 4 ? parts[1] : null;
}

export async function render(ctx) {
  const id = ctx.arg;
  const holder = h("div");
  const message = h("div", { "aria-live": "polite" });
  const seen = [];  // events of this job received while the page is open
  ctx.main.append(h("h1", {}, "Job ", h("code", {}, id)), message, holder);

  async function act(verb) {
    message.replaceChildren();
    try {
      const job = await api(`/jobs/${encodeURIComponent(id)}/${verb}`, { method: "POST" });
      announce(`Job ${verb === "retry" ? "retried" : "cancelled"}: now ${job.status}.`);
      draw(job);
    } catch (err) { message.append(errorBox(err)); }
  }

  function draw(job) {
    const trace = traceId(job.headers);
    const facts = [
      ["Status", badge(job.status)], ["Task", job.task], ["Queue", job.queue], ["Priority", job.priority],
      ["Attempts", `${job.attempts} of ${job.max_attempts}`], ["Lost workers (rescues)", `${job.rescues} of ${job.max_rescues}`],
      ["Tenant", job.tenant], ["Idempotency key", job.key], ["Worker", job.worker],
      ["Timeout", job.timeout ? `${job.timeout} s` : null], ["Trace id", trace ? h("code", {}, trace) : null],
    ].filter(([, v]) => v !== null && v !== undefined && v !== "");
    const steps = [
      ["Created", job.created_at], ["Due", job.run_at !== job.created_at ? job.run_at : null],
      ["Started (last attempt)", job.started_at], ["Finished", job.finished_at],
    ].filter(([, t]) => t);
    const timeline = h("ol", { class: "timeline", id: "timeline" },
      steps.map(([name, t]) => h("li", {}, h("strong", {}, name), " ", when(t))),
      seen.map((e) => h("li", {}, h("strong", {}, e.type), " ", when(e.at), " (live)")));
    const buttons = [];
    if (ctx.session && ctx.session.operate) {
      if (job.status === "pending" || job.status === "running") buttons.push(h("button", { type: "button", class: "button danger", id: "cancel-job", onclick: () => act("cancel") }, "Cancel job"));
      if (job.status === "failed" || job.status === "cancelled") buttons.push(h("button", { type: "button", class: "button", id: "retry-job", onclick: () => act("retry") }, "Retry job"));
    }
    append(clear(holder), [
      buttons.length ? h("div", { class: "actions" }, buttons) : null,
      h("div", { class: "grid" },
        h("section", { class: "card", "aria-labelledby": "facts-h" }, h("h2", { id: "facts-h" }, "Facts"),
          h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
        h("section", { class: "card", "aria-labelledby": "timeline-h" }, h("h2", { id: "timeline-h" }, "Timeline"), timeline,
          job.progress !== null && job.progress !== undefined ? [h("h2", {}, "Progress"), json(job.progress)] : null),
      ),
      job.error ? h("section", { "aria-labelledby": "error-h" }, h("h2", { id: "error-h" }, "Error"), h("pre", { id: "job-error" }, job.error),
        job.traceback ? [h("h2", {}, "Traceback"), h("pre", { id: "job-traceback" }, job.traceback)] : null) : null,
      h("section", { "aria-labelledby": "args-h" }, h("h2", { id: "args-h" }, "Arguments"), json({ args: job.args, kwargs: job.kwargs })),
      job.status === "completed" ? h("section", { "aria-labelledby": "result-h" }, h("h2", { id: "result-h" }, "Result"), json(job.result)) : null,
      h("p", {}, h("a", { href: `${BASE}/jobs` }, "All jobs")),
    ]);
  }

  draw(await api(`/jobs/${encodeURIComponent(id)}`));
  return ctx.live.on(async (batch) => {
    const mine = batch.events.filter((e) => e.job.id === id);
    if (!mine.length && !batch.poll) return;
    seen.push(...mine.map((e) => ({ type: e.type, at: e.at })));
    try { draw(await api(`/jobs/${encodeURIComponent(id)}`)); } catch { /* next time */ }
  });
}
