// Bulk actions on everything a query matches: the exact count first (dry run), a
// confirmation naming it, then the action with `expected` so the server refuses (409)
// when the count changed in between, and we ask again with the new one.

import { api, ApiError } from "./api.js";
import { announce } from "./dom.js";

const VERBS = { retry: ["Retry", "retried"], cancel: ["Cancel", "cancelled"], discard: ["Discard", "discarded"] };

export function ask(title, text, yes) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-yes").textContent = yes;
  const opener = document.activeElement;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      if (opener && opener.isConnected) opener.focus();
    }, { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
    document.getElementById("confirm-no").focus();
  });
}

// Resolves to {count} when done, or null when nothing matched or the user said no.
export async function bulk(action, q) {
  const [verb, done] = VERBS[action];
  let { count } = await api(`/jobs/${action}`, { method: "POST", body: { q, dry_run: true } });
  for (let round = 0; round < 3; round++) {
    if (!count) {
      announce(`No job matching ${q} can be ${done}.`);
      return { count: 0 };
    }
    const plural = count === 1 ? "job" : "jobs";
    const yes = await ask(`${verb} ${count.toLocaleString("en")} ${plural}?`,
      `${verb} all ${count.toLocaleString("en")} ${plural} matching “${q}”. This is done on the server in batches and written to the audit log.`,
      `${verb} ${count.toLocaleString("en")} ${plural}`);
    if (!yes) return null;
    try {
      const result = await api(`/jobs/${action}`, { method: "POST", body: { q, expected: count } });
      announce(`${result.count.toLocaleString("en")} ${result.count === 1 ? "job" : "jobs"} ${done}.`);
      return result;
    } catch (err) {
      if (err instanceof ApiError && err.status === 409 && err.extra && typeof err.extra.count === "number") {
        count = err.extra.count;  // it changed meanwhile: ask again with the new count
        continue;
      }
      throw err;
    }
  }
  return null;
}
