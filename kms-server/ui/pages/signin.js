// Signing in: single sign-on (the provider found by the e-mail's domain; its login sets
// the HttpOnly session cookie and returns here), or a pasted token kept for this tab.

import * as api from "../api.js";
import { h, field, errorBox, announceNext } from "../dom.js";

/** Where a single sign-on login returns to: this console. */
const RETURN_TO = "/ui/";

export function render(main, _params, ctx) {
  main.replaceChildren(h("h1", { tabindex: "-1", text: "Sign in" }));

  // Single sign-on: GET /v1/sso/discover names the provider of the e-mail's domain.
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true });
  const ssoOut = h("div", { "aria-live": "polite" });
  const sso = h(
    "form",
    {
      class: "card",
      on: {
        submit: async (e) => {
          e.preventDefault();
          ssoOut.replaceChildren();
          try {
            const found = await api.get(`/v1/sso/discover${api.query({ email: email.value.trim() })}`);
            const url = new URL(found.login_url, window.location.href);
            if (url.protocol !== "http:" && url.protocol !== "https:") {
              throw new Error("the server gave an unusable login URL");
            }
            url.searchParams.set("return_to", RETURN_TO);
            const slug = (url.pathname.match(/\/v1\/sso\/([^/]+)\/login$/) || [])[1];
            const link = h("a", {
              href: url.toString(),
              class: "button-link",
              text: slug ? `Continue with single sign-on (${slug})` : "Continue with single sign-on",
            });
            ssoOut.replaceChildren(h("p", {}, "Your organisation signs in at its identity provider. "), link);
            link.focus();
          } catch (err) {
            ssoOut.replaceChildren(
              errorBox(err.status === 404 ? { message: "no identity provider is set up for that e-mail domain", code: err.code, requestId: err.requestId } : err, "Single sign-on"),
            );
          }
        },
      },
    },
    h("h2", { text: "With single sign-on" }),
    field("Work e-mail", email, "kms finds your organisation's identity provider from the domain."),
    h("button", { type: "submit", text: "Find my sign-in" }),
    ssoOut,
  );

  // A pasted token: held in memory for this tab, sent as Authorization: Bearer.
  const token = h("input", {
    type: "password",
    name: "token",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
  });
  const tokenOut = h("div", { "aria-live": "polite" });
  const byToken = h(
    "form",
    {
      class: "card",
      on: {
        submit: async (e) => {
          e.preventDefault();
          tokenOut.replaceChildren();
          const value = token.value.trim();
          api.useToken(value);
          try {
            // Any authenticated call tells a working token from a wrong one; a token
            // without app.read is still signed in (its pages say what it lacks).
            await api.get("/v1/apps?limit=1");
          } catch (err) {
            if (err.status !== 403) {
              api.forget();
              tokenOut.replaceChildren(errorBox(err, "Signing in"));
              token.focus();
              return;
            }
          }
          token.value = "";
          announceNext("Signed in with the pasted token. It is kept in this tab only; closing the tab or signing out forgets it.");
          ctx.signedIn();
        },
      },
    },
    h("h2", { text: "With an API token" }),
    field(
      "Admin token",
      token,
      "Paste an API key such as the root token. It stays in this tab's memory only: never stored, gone when you sign out or close the tab.",
    ),
    h("button", { type: "submit", text: "Sign in" }),
    tokenOut,
  );

  main.append(h("div", { class: "grid-2" }, sso, byToken));
}
