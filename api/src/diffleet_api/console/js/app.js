// The console's shell: login, the navigation, and hash routes. A page module exports
// render(main, params) and may return a function that stops what it started (streams,
// timers) when the user leaves the page.
import { ApiError, login, logout, sessionKind } from "./api.js";
import { announce, field, h, replace } from "./dom.js";
import * as fleet from "./pages/fleet.js";
import * as gallery from "./pages/gallery.js";
import * as generate from "./pages/generate.js";
import * as job from "./pages/job.js";
import * as usage from "./pages/usage.js";
import { navigate, parseHash } from "./routes.js";

// Route -> [page, who may see it]. `#/jobs/<id>` is the live job page.
const ROUTES = {
  generate: [generate, "tenant"],
  jobs: [job, "tenant"],
  gallery: [gallery, "tenant"],
  usage: [usage, "tenant"],
  fleet: [fleet, "platform"],
};
const HOME = { tenant: "#/generate", platform: "#/fleet" };

const main = document.getElementById("main");
let leave = null;
// Each render's number: a page still loading when the user moves on must neither keep
// its timers nor draw into the next page (it draws into its own view, detached by then).
let rendering = 0;

function showNav() {
  const kind = sessionKind();
  const nav = document.getElementById("nav");
  nav.hidden = kind === null;
  document.getElementById("logout").hidden = kind === null;
  for (const link of nav.querySelectorAll("a")) link.hidden = link.dataset.for !== kind;
  const current = `#/${parseHash().route}`;
  for (const link of nav.querySelectorAll("a")) {
    if (link.getAttribute("href") === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function renderLogin() {
  const token = h("input", { type: "password", autocomplete: "off", spellcheck: "false", required: true });
  const error = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    { class: "login panel", onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = "";
      try {
        const kind = await login(token.value);
        token.value = "";
        navigate(HOME[kind]);
      } catch (failure) {
        error.textContent = failure instanceof ApiError && failure.status === 401
          ? "This key or token is not accepted." : String(failure.message);
      }
    } },
    field("API key or token", token, "A tenant's API key (dfl_...) or JWT, or a platform key for the fleet. Kept in this page's memory only: reloading logs out."),
    h("p", {}, h("button", { type: "submit", class: "primary" }, "Log in")),
    error,
  );
  replace(main, h("h1", {}, "Log in"), form);
  token.focus();
}

function renderForbidden(route) {
  replace(
    main,
    h("h1", {}, "Not available"),
    h("p", { role: "alert" }, route === "fleet"
      ? "The fleet page needs a platform-operator key: a tenant's credentials never see the fleet."
      : "This page is for a tenant's credentials; a platform key sees the fleet."),
  );
}

async function render() {
  const mine = ++rendering;
  if (leave) {
    leave();
    leave = null;
  }
  announce("");
  const { route, id, query } = parseHash();
  const kind = sessionKind();
  showNav();
  if (kind === null) {
    renderLogin();
    return;
  }
  const entry = ROUTES[route];
  if (!entry) {
    navigate(HOME[kind]);
    return;
  }
  const [page, audience] = entry;
  if (audience !== kind) {
    renderForbidden(route);
    return;
  }
  const view = h("div", { class: "page" });
  main.replaceChildren(view);
  try {
    const cleanup = (await page.render(view, { id, query })) || null;
    if (mine === rendering) leave = cleanup;
    else if (cleanup) cleanup();
  } catch (error) {
    if (mine === rendering) announce(error instanceof ApiError ? error.describe() : String(error), true);
  }
  if (mine === rendering) main.focus();
}

document.getElementById("logout").addEventListener("click", () => {
  logout();
  navigate("#/login");
});
window.addEventListener("hashchange", render);
render();
