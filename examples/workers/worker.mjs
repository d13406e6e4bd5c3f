#!/usr/bin/env node
// A hyperqueue worker in Node.js (20+), with nothing but the standard library.
//
// It speaks the worker protocol of a hyperqueue server (docs/guides/remote-workers.md):
// register the tasks it runs, claim jobs with a long poll, record each start, heartbeat
// the leases while a job runs, and finish with the job's result or error, sending the
// fencing token the claim gave. A job whose lease it lost (it froze, the network broke)
// is refused at finish with 409: another worker has it, so the result is dropped.
//
//   HYPERQUEUE_URL=http://127.0.0.1:8000 HYPERQUEUE_API_KEY=... node worker.mjs
//
// Environment: HYPERQUEUE_URL (http://127.0.0.1:8000), HYPERQUEUE_API_KEY (a key with
// the worker role; none for an open server), WORKER_NAME (node-<host>-<pid>),
// WORKER_LEASE (seconds, 10), WORKER_CONCURRENCY (jobs at once, 4), WORKER_QUEUES
// (comma-separated; all when unset). It writes one JSON line per step to stdout and
// stops on SIGTERM or SIGINT once its running jobs are finished.

import os from "node:os";

const URL_BASE = (process.env.HYPERQUEUE_URL ?? "http://127.0.0.1:8000").replace(/\/$/, "");
const API = `${URL_BASE}/api/v1/worker`;
const KEY = process.env.HYPERQUEUE_API_KEY;
const NAME = process.env.WORKER_NAME ?? `node-${os.hostname()}-${process.pid}`;
const LEASE = Number(process.env.WORKER_LEASE ?? 10);
const CONCURRENCY = Number(process.env.WORKER_CONCURRENCY ?? 4);
const QUEUES = process.env.WORKER_QUEUES ? process.env.WORKER_QUEUES.split(",") : null;

const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });

// The tasks this worker runs: name -> async (args, kwargs, { signal, progress }) => result.
// `signal` aborts when the job's lease is lost.
const TASKS = {
  async node_add([a, b]) {
    return a + b;
  },
  async node_upper([text]) {
    return String(text).toUpperCase();
  },
  async node_sleep([seconds, value], _kwargs, { signal, progress }) {
    await progress({ sleeping: seconds });
    await sleep(seconds * 1000, signal);
    return value ?? seconds;
  },
  async node_fail([message]) {
    throw new Error(message);
  },
};

const log = (event, fields = {}) =>
  process.stdout.write(JSON.stringify({ event, worker: NAME, ...fields }) + "\n");

class Refused extends Error {}

// One call of the protocol: JSON in, JSON out; a 4xx/5xx body is {status_code, detail}.
async function call(path, body, { accept = [], signal } = {}) {
  const headers = { "content-type": "application/json" };
  if (KEY) headers.authorization = `Bearer ${KEY}`;
  const response = await fetch(API + path, {
    method: "POST",
    headers,
    body: JSON.stringify(body),
    signal,
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.ok || accept.includes(response.status)) return { status: response.status, data };
  throw new Refused(`${path}: ${response.status} ${data?.detail ?? text}`);
}

const held = new Map(); // job id -> { job, abort }
let stopping = false;
const stop = new AbortController(); // ends a long poll in flight when asked to stop

async function register() {
  const now = Date.now() / 1000;
  await call("/register", {
    name: NAME,
    host: os.hostname(),
    pid: process.pid,
    tasks: Object.keys(TASKS),
    queues: QUEUES,
    concurrency: CONCURRENCY,
    started_at: now,
    seen_at: now,
    expires_at: now + 3 * LEASE, // how long it counts as alive: the server's clock counts
  });
}

// Every lease/3: renew the leases of running jobs (a lost one is aborted), renew the
// registration, and rescue jobs whose workers stopped heartbeating.
async function heartbeat() {
  while (!stopping || held.size) {
    await sleep((LEASE / 3) * 1000);
    try {
      if (held.size) {
        const leases = [...held.values()].map(({ job }) => ({ id: job.id, token: job.token }));
        const { data } = await call("/extend", { leases, lease: LEASE });
        data.kept.forEach((kept, i) => {
          if (!kept) {
            const lost = held.get(leases[i].id);
            log("lease_lost", { id: leases[i].id, token: leases[i].token });
            lost?.abort.abort(new Error("lease lost"));
          }
        });
      }
      if (!stopping) await register();
      const { data } = await call("/rescue", {});
      for (const job of data.jobs) log("rescued", { id: job.id, status: job.status });
    } catch (error) {
      log("heartbeat_failed", { error: String(error) });
    }
  }
}

function backoff(attempts) {
  return Math.min(2 ** (attempts - 1), 60);
}

async function run(job) {
  const abort = new AbortController();
  held.set(job.id, { job, abort });
  const started = Date.now() / 1000;
  try {
    await call("/started", { starts: [{ id: job.id, token: job.token, at: started }] });
  } catch (error) {
    log("start_not_recorded", { id: job.id, error: String(error) }); // the job runs anyway
  }
  log("started", { id: job.id, task: job.task, token: job.token, attempts: job.attempts });
  const progress = (value) =>
    call("/progress", { id: job.id, token: job.token, progress: value });
  let outcome;
  try {
    const result = await TASKS[job.task](job.args, job.kwargs, { signal: abort.signal, progress });
    outcome = { id: job.id, token: job.token, status: "completed", result, started_at: started };
  } catch (error) {
    const message = `${error?.name ?? "Error"}: ${error?.message ?? error}`;
    const again = job.attempts < job.max_attempts;
    outcome = {
      id: job.id,
      token: job.token,
      status: again ? "pending" : "failed",
      error: message,
      traceback: error?.stack ?? null,
      run_at: again ? Date.now() / 1000 + backoff(job.attempts) : null,
      started_at: started,
    };
  }
  held.delete(job.id);
  const { status, data } = await call("/finish", { outcomes: [outcome] }, { accept: [409] });
  if (status === 409) {
    log("finish_refused", { id: job.id, token: job.token, detail: data.detail });
  } else {
    log("finished", { id: job.id, token: job.token, status: data.jobs[0].status });
  }
}

async function claimLoop() {
  const running = new Set();
  while (!stopping) {
    const free = CONCURRENCY - running.size;
    if (free <= 0) {
      await Promise.race(running);
      continue;
    }
    let jobs;
    try {
      ({ data: { jobs } } = await call("/claim", {
        worker: NAME,
        queues: QUEUES,
        tasks: Object.keys(TASKS),
        limit: free,
        lease: LEASE,
        wait: 20, // a long poll: the server answers as soon as a job is ready
      }, { signal: stop.signal }));
    } catch (error) {
      if (stopping) break; // (a job claimed by the abandoned poll is rescued after its lease)
      log("claim_failed", { error: String(error) });
      await sleep(1000);
      continue;
    }
    for (const job of jobs) {
      log("claimed", { id: job.id, token: job.token });
      const task = run(job)
        .catch((error) => log("run_failed", { id: job.id, error: String(error) }))
        .finally(() => running.delete(task));
      running.add(task);
    }
  }
  await Promise.all(running);
}

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    stopping = true;
    stop.abort();
    log("stopping", { signal });
  });
}

await register();
log("ready", { tasks: Object.keys(TASKS), lease: LEASE });
await Promise.all([claimLoop(), heartbeat()]);
await call("/unregister", { name: NAME });
log("stopped");
