// The live event stream: the API's Server-Sent Events read with fetch (so the key can
// go in a header), resumed from the last id seen (Last-Event-ID), delivered to the page
// in batches at most about once a second (the newest event per job wins), paused while
// the tab is hidden, and replaced by polling after repeated errors.

import { API, headers } from "./api.js";

const FLUSH_MS = 1000;
const FAILURES_BEFORE_POLLING = 3;
const POLL_MS = 5000;
const RETRY_SSE_MS = 30000;

export class Live {
  constructor(statusEl) {
    this.statusEl = statusEl;
    this.lastId = null;       // last event id seen: where a reconnection resumes
    this.listeners = new Set();
    this.pending = new Map();  // job id -> newest event, waiting for the next flush
    this.gap = false;
    this.failures = 0;
    this.mode = "idle";
    this.abort = null;
    this.pollTimer = null;
    this.flushTimer = setInterval(() => this.flush(), FLUSH_MS);
    document.addEventListener("visibilitychange", () => this.onVisibility());
  }

  on(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  setState(state, text) {
    this.mode = state;
    if (this.statusEl) {
      this.statusEl.dataset.state = state;
      this.statusEl.textContent = text;
    }
  }

  start() {
    if (document.hidden) { this.setState("paused", "Paused (tab hidden)"); return; }
    if (this.abort) return;
    this.connect();
  }

  stop() {
    if (this.abort) { this.abort.abort(); this.abort = null; }
    if (this.pollTimer) { clearInterval(this.pollTimer); this.pollTimer = null; }
  }

  onVisibility() {
    if (document.hidden) {
      this.stop();
      this.setState("paused", "Paused (tab hidden)");
    } else {
      this.failures = 0;
      this.connect();
    }
  }

  async connect() {
    this.stop();
    const controller = new AbortController();
    this.abort = controller;
    this.setState(this.failures ? "reconnecting" : "connecting", this.failures ? "Reconnecting" : "Connecting");
    const extra = { Accept: "text/event-stream" };
    if (this.lastId !== null) extra["Last-Event-ID"] = String(this.lastId);
    let opened = false;
    try {
      const response = await fetch(`${API}/events`, {
        headers: headers(extra), signal: controller.signal, credentials: "omit", cache: "no-store",
      });
      if (!response.ok || !response.body) throw new Error(`event stream answered ${response.status}`);
      opened = true;
      this.failures = 0;
      this.setState("live", "Live");
      await this.read(response.body.getReader());
      if (controller.signal.aborted) return;
      throw new Error("event stream ended");
    } catch (err) {
      if (controller.signal.aborted) return;
      if (this.abort === controller) this.abort = null;
      if (!opened) this.failures += 1;
      if (this.failures >= FAILURES_BEFORE_POLLING) {
        this.startPolling();
      } else {
        this.setState("reconnecting", "Reconnecting");
        setTimeout(() => { if (!document.hidden && !this.abort) this.connect(); }, 1000 * this.failures + 250);
      }
    }
  }

  startPolling() {
    this.setState("polling", "Polling (live stream unavailable)");
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = setInterval(() => this.emit({ events: [], poll: true, gap: false }), POLL_MS);
    setTimeout(() => {
      if (this.mode === "polling" && !document.hidden) { this.failures = FAILURES_BEFORE_POLLING - 1; this.connect(); }
    }, RETRY_SSE_MS);
  }

  async read(reader) {
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        this.message(block);
      }
    }
  }

  message(block) {
    let id = null, event = "message", data = "";
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "event") event = value;
      else if (field === "data") data += (data ? "\n" : "") + value;
    }
    if (id !== null && /^\d+$/.test(id)) this.lastId = Number(id);
    if (event === "gap") { this.gap = true; return; }
    if (!data || !event.startsWith("job.")) return;
    try {
      const parsed = JSON.parse(data);
      if (parsed && parsed.job) this.pending.set(parsed.job.id, { id: this.lastId, ...parsed });
    } catch { /* not an event of ours */ }
  }

  flush() {
    if (!this.pending.size && !this.gap) return;
    const events = [...this.pending.values()];
    const gap = this.gap;
    this.pending.clear();
    this.gap = false;
    this.emit({ events, poll: false, gap });
  }

  emit(batch) {
    for (const listener of this.listeners) {
      try { listener(batch); } catch (err) { console.warn("live listener failed", err); }
    }
  }
}
