// Sign in: the API key is checked against GET /session, then kept for this tab only.

import { api, ApiError, BASE, dropKey, setKey } from "../api.js";
import { errorBox, h } from "../dom.js";

export async function render(ctx) {
  const input = h("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "current-password", required: true, "aria-describedby": "key-hint" });
  const status = h("div", { "aria-live": "assertive" });
  const form = h("form", { class: "card" },
    h("label", { for: "api-key" }, "API key"),
    input,
    h("p", { id: "key-hint", class: "hint" }, "The key is kept in this browser tab only and sent to this server's API with each request."),
    h("button", { type: "submit", class: "button" }, "Sign in"),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.replaceChildren();
    setKey(input.value.trim());
    try {
      await api("/session");
    } catch (err) {
      dropKey();
      const text = err instanceof ApiError && err.status === 401 ? "That key is not valid." : null;
      status.append(text ? h("p", { class: "error", role: "alert" }, text) : errorBox(err));
      input.focus();
      return;
    }
    await ctx.signedIn();
    const next = ctx.params.get("next");
    ctx.navigate(next && next.startsWith(BASE) && !next.startsWith(`${BASE}/login`) ? next : BASE, { replace: true });
  });
  ctx.main.append(h("section", { class: "login" }, h("h1", {}, "Sign in"), h("p", {}, "This server asks for an API key."), form));
  input.focus();
}
