// The console's entry point: sign-in state, the hash router, and the page frame.
//
// Pages are modules exporting `render(main, params)`; they build their content with
// dom.js and call the API through api.js. On every navigation the main region is rebuilt
// (in a fresh element of its own) and focus moves to its heading, so keyboard and
// screen-reader users land on the new page.

import * as api from "./api.js";
import { h, button, announce, announceNext, settle, errorBox } from "./dom.js";
import * as signin from "./pages/signin.js";
import * as apps from "./pages/apps.js";
import * as tokens from "./pages/tokens.js";
import * as permissions from "./pages/permissions.js";
import * as roles from "./pages/roles.js";
import * as people from "./pages/people.js";
import * as audit from "./pages/audit.js";
import * as compliance from "./pages/compliance.js";
import * as keys from "./pages/keys.js";

/** `[pattern, render, navigation link]`: the first pattern matching the hash wins. */
const ROUTES = [
  [/^\/signin$/, signin.render, null],
  [/^\/apps$/, apps.renderList, "#/apps"],
  [/^\/apps\/([^/]+)$/, apps.renderApp, "#/apps"],
  [/^\/apps\/([^/]+)\/users$/, people.renderUsers, "#/apps"],
  [/^\/apps\/([^/]+)\/idps$/, people.renderIdps, "#/apps"],
  [/^\/apps\/([^/]+)\/usage$/, apps.renderUsage, "#/apps"],
  [/^\/tokens\/([^/]+)$/, tokens.renderToken, "#/apps"],
  [/^\/users\/([^/]+)$/, people.renderUser, "#/apps"],
  [/^\/permissions$/, permissions.render, "#/permissions"],
  [/^\/roles$/, roles.render, "#/roles"],
  [/^\/audit$/, audit.render, "#/audit"],
  [/^\/compliance$/, compliance.render, "#/compliance"],
  [/^\/keys$/, keys.render, "#/keys"],
  [/^\/me$/, people.renderMe, "#/me"],
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");

/** The route of the current hash, without the leading `#`. */
function currentPath() {
  const hash = window.location.hash;
  return hash.startsWith("#/") ? hash.slice(1) : "/apps";
}

/** Navigates to `path` (`/apps/...`). */
export function go(path) {
  if (window.location.hash === `#${path}`) {
    route();
  } else {
    window.location.hash = `#${path}`;
  }
}

function updateFrame() {
  const mode = api.signedIn();
  nav.hidden = mode === null;
  who.replaceChildren();
  if (mode === null) {
    return;
  }
  const me = api.session();
  const label =
    mode === "session" && me && me.user
      ? `Signed in as ${me.user.email || me.user.name || me.user.id}`
      : "Signed in with a pasted token";
  who.append(h("span", { class: "who-label", text: label }), button("Sign out", signOut, { class: "secondary" }));
}

async function signOut() {
  if (api.signedIn() === "session") {
    try {
      await api.call("POST", "/v1/auth/logout");
    } catch (err) {
      announce(`Signing out at the server failed: ${err.message}`, "error");
    }
  }
  api.forget();
  updateFrame();
  announceNext("Signed out.");
  go("/signin");
}

/** Called by the sign-in page once a credential works. */
export function signedIn() {
  updateFrame();
  go("/apps");
}

/** Counts navigations, so a slow render that a newer one overtook leaves the page alone. */
let routeSeq = 0;

async function route() {
  routeSeq += 1;
  const seq = routeSeq;
  const path = currentPath();
  if (api.signedIn() === null && path !== "/signin") {
    go("/signin");
    return;
  }
  if (api.signedIn() !== null && path === "/signin") {
    go("/apps");
    return;
  }
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  for (const link of nav.querySelectorAll("a")) {
    link.removeAttribute("aria-current");
  }
  // Each navigation draws into its own element: an older render still under way fills
  // its own (detached) one, never the page of a newer navigation.
  const heading = h("h1", { tabindex: "-1", text: "Not found" });
  const view = h("div", { class: "view" }, heading);
  main.replaceChildren(view);
  if (!found) {
    view.append(h("p", {}, "There is no such page. ", h("a", { href: "#/apps", text: "Go to the applications." })));
    heading.focus();
    return;
  }
  const [pattern, render, link] = found;
  if (link) {
    const current = nav.querySelector(`a[href="${link}"]`);
    if (current) {
      current.setAttribute("aria-current", "page");
    }
  }
  try {
    const params = pattern.exec(path).slice(1).map(decodeURIComponent);
    await render(view, params, { go, signedIn });
  } catch (err) {
    view.append(errorBox(err));
  }
  if (seq !== routeSeq) {
    return;
  }
  const title = view.querySelector("h1");
  document.title = title ? `${title.textContent} · kms console` : "kms console";
  if (title) {
    if (!title.hasAttribute("tabindex")) {
      title.setAttribute("tabindex", "-1");
    }
    title.focus();
  }
}

async function start() {
  document.getElementById("skip-link").addEventListener("click", (e) => {
    // The hash is the router's: move focus without changing it.
    e.preventDefault();
    main.focus();
  });
  // A single sign-on session shows itself through GET /v1/me with the session cookie;
  // without one, the sign-in page.
  try {
    const me = await api.get("/v1/me");
    api.useSession(me);
  } catch (err) {
    if (err.status !== 401 && err.status !== 403) {
      announce(`Could not check for a single sign-on session: ${err.message}`, "error");
    }
  }
  updateFrame();
  window.addEventListener("kms:unauthenticated", (e) => {
    if (api.signedIn() === null || currentPath() === "/signin") {
      return;
    }
    api.forget();
    updateFrame();
    announceNext(`Signed out: ${e.detail}. Sign in again.`, "error");
    go("/signin");
  });
  window.addEventListener("hashchange", () => {
    settle();
    route();
  });
  route();
}

start();
