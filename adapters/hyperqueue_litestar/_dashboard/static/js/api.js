// The API client: the same routes and keys as every other client. The key typed on the
// sign-in form stays in this tab's sessionStorage and goes out as X-API-Key.

const KEY = "hyperqueue.apiKey";
export const API = document.querySelector('meta[name="hq-api"]').content;
export const BASE = document.querySelector('meta[name="hq-base"]').content;

export class ApiError extends Error {
  constructor(status, detail, extra) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
    this.extra = extra;
  }
}

export function getKey() { return sessionStorage.getItem(KEY); }
export function setKey(key) { sessionStorage.setItem(KEY, key); }
export function dropKey() { sessionStorage.removeItem(KEY); }

export function headers(extra = {}) {
  const out = { Accept: "application/json", ...extra };
  const key = getKey();
  if (key) out["X-API-Key"] = key;
  return out;
}

export async function api(path, { method = "GET", body, signal, root = false } = {}) {
  const init = { method, headers: headers(), signal, credentials: "omit", cache: "no-store" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(root ? path : API + path, init);
  let data = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) data = await response.json();
  if (!response.ok && !(root && response.status === 503 && data)) {
    const detail = data && data.detail ? data.detail : response.statusText || "request failed";
    throw new ApiError(response.status, detail, data ? data.extra : undefined);
  }
  return data;
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") search.set(k, v);
  const s = search.toString();
  return s ? `?${s}` : "";
}
