// The dashboard's entry point: theme, sign-in, the router between pages, the live stream.

import { api, ApiError, BASE, dropKey, getKey } from "./api.js";
import { announce, clear, errorBox, h } from "./dom.js";
import { Live } from "./live.js";

const PAGES = {
  overview: () => import("./pages/overview.js"),
  queues: () => import("./pages/queues.js"),
  jobs: () => import("./pages/jobs.js"),
  job: () => import("./pages/job.js"),
  "dead-letters": () => import("./pages/dead.js"),
  workers: () => import("./pages/workers.js"),
  schedules: () => import("./pages/schedules.js"),
  audit: () => import("./pages/audit.js"),
  login: () => import("./pages/login.js"),
};

const main = document.getElementById("main");
const live = new Live(document.getElementById("live-status"));
let session = null;
let dispose = null;
let generation = 0;

// -- theme: the system's unless the toggle chose one (kept in localStorage) -----------
const themeButton = document.getElementById("theme-toggle");
function currentTheme() {
  const chosen = localStorage.getItem("hyperqueue.theme");
  if (chosen) return chosen;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}
function showTheme() {
  const dark = currentTheme() === "dark";
  themeButton.setAttribute("aria-pressed", String(dark));
  themeButton.textContent = "Dark theme";
}
const stored = localStorage.getItem("hyperqueue.theme");
if (stored) document.documentElement.dataset.theme = stored;
showTheme();
themeButton.addEventListener("click", () => {
  const next = currentTheme() === "dark" ? "light" : "dark";
  localStorage.setItem("hyperqueue.theme", next);
  document.documentElement.dataset.theme = next;
  showTheme();
  announce(`${next} theme`);
});

// -- routing -----------------------------------------------------------------------------
function route(pathname) {
  const rest = pathname.startsWith(BASE) ? pathname.slice(BASE.length).replace(/^\/+|\/+$/g, "") : "";
  if (!rest) return { page: "overview", arg: null };
  const [first, ...more] = rest.split("/");
  if (first === "jobs" && more.length) return { page: "job", arg: decodeURIComponent(more.join("/")) };
  return { page: PAGES[first] ? first : "overview", arg: null };
}

export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href]");
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !(url.pathname === BASE || url.pathname.startsWith(`${BASE}/`))) return;
  if (url.pathname.startsWith(`${BASE}/static/`)) return;
  event.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener("popstate", () => render());

function markNav(page) {
  const current = page === "job" ? "jobs" : page;
  for (const link of document.querySelectorAll("#nav a[data-page]")) {
    if (link.dataset.page === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const audit = document.querySelector('#nav a[data-page="audit"]');
  if (audit) audit.parentElement.hidden = !!session && !session.admin;
}

const OPEN = document.querySelector('meta[name="hq-open"]').content === "true";

async function loadSession() {
  if (!OPEN && !getKey()) { session = null; return false; }  // ask for a key first
  try {
    session = await api("/session");
    return true;
  } catch (err) {
    session = null;
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) return false;
    throw err;
  }
}

function showWho() {
  const who = document.getElementById("who");
  const out = document.getElementById("sign-out");
  if (!session) { who.textContent = ""; out.hidden = true; live.setState("idle", "Not signed in"); return; }
  if (session.open) { who.textContent = "Open server (no API keys)"; out.hidden = true; return; }
  who.textContent = `Key ${session.name} (${session.roles.join(", ")})`;
  out.hidden = false;
}
document.getElementById("sign-out").addEventListener("click", () => {
  dropKey();
  session = null;
  live.stop();
  showWho();
  navigate(`${BASE}/login`);
});

async function render() {
  const mine = ++generation;
  if (dispose) { try { dispose(); } catch { /* page already gone */ } dispose = null; }
  let { page, arg } = route(location.pathname);
  if (!session && page !== "login") {
    let ok = false;
    try { ok = await loadSession(); } catch (err) { clear(main).append(errorBox(err)); return; }
    if (!ok) {
      const next = location.pathname + location.search;
      history.replaceState(null, "", `${BASE}/login?next=${encodeURIComponent(next)}`);
      page = "login";
      if (getKey()) dropKey();
    }
  }
  if (mine !== generation) return;
  showWho();
  markNav(page);
  if (session) live.start();
  const module = await PAGES[page]();
  if (mine !== generation) return;
  clear(main);
  const ctx = {
    main, live, session, arg, navigate,
    params: new URLSearchParams(location.search),
    signedIn: async () => { await loadSession(); showWho(); live.start(); },
  };
  try {
    dispose = (await module.render(ctx)) || null;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      session = null;
      dropKey();
      navigate(`${BASE}/login`, { replace: true });
      return;
    }
    main.append(errorBox(err));
  }
  const heading = main.querySelector("h1");
  document.title = `${heading ? heading.textContent : "Dashboard"} · hyperqueue`;
  if (render.focusOnNext) main.focus({ preventScroll: true });
  render.focusOnNext = true;
}
render.focusOnNext = false;

render();
