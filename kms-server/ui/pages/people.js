// People: an application's users and identity providers, one user's page with their
// sessions (revoke one, or all), and "my sign-in" (GET /v1/me, GET /v1/me/sessions).

import * as api from "../api.js";
import {
  fill, h, field, table, pagedList, badge, time, button, confirmThen, onSubmit, announce, errorBox,
  facts, chips, val, words,
} from "../dom.js";
import { appHeader } from "./apps.js";

/** `#/apps/{id}/users`. */
export async function renderUsers(main, [id]) {
  await appHeader(main, id, "users");
  main.append(
    h("h2", { text: "Users" }),
    h("p", { class: "meta", text: "Users appear here after their first single sign-on login." }),
    pagedList({
      label: "Users",
      load: (cursor) => api.get(`/v1/apps/${api.seg(id)}/users${api.query({ limit: 20, cursor })}`),
      render: (items) =>
        table(
          "Users of this application",
          [
            { label: "E-mail", cell: (u) => h("a", { href: `#/users/${api.seg(u.id)}`, text: u.email || u.name || u.id }) },
            { label: "Name", cell: (u) => u.name || "—" },
            { label: "Status", cell: (u) => badge(u.status) },
            { label: "Roles", cell: (u) => chips(u.roles) },
            { label: "Last login", cell: (u) => time(u.last_login_at) },
          ],
          items,
        ),
    }),
  );
}

function sessionTable(caption, sessions, onRevoke) {
  return table(
    caption,
    [
      { label: "Session", cell: (x) => h("code", { text: x.id }) },
      { label: "Started", cell: (x) => time(x.created_at) },
      { label: "Last used", cell: (x) => time(x.last_used_at) },
      { label: "Expires", cell: (x) => time(x.expires_at) },
      { label: "From", cell: (x) => [x.ip || "—", x.user_agent ? h("span", { class: "meta", text: ` ${x.user_agent}` }) : null] },
      {
        label: "State",
        cell: (x) =>
          x.revoked_at
            ? [badge("revoked"), h("span", { class: "meta", text: ` ${x.revoke_reason || ""}` })]
            : onRevoke
              ? button("Revoke", () => onRevoke(x), { class: "secondary", "aria-label": `Revoke session ${x.id}` })
              : badge("active"),
      },
    ],
    sessions,
  );
}

/** `#/users/{id}`: one user, their roles and sessions. */
export async function renderUser(main, [id], ctx) {
  const u = await api.get(`/v1/users/${api.seg(id)}`);
  const reload = async () => {
    await renderUser(main, [id], ctx);
    main.querySelector("h1").focus();
  };
  const sessions = h("div", {}, h("p", { class: "meta", text: "Loading sessions…" }));

  const revokeOne = (x) =>
    confirmThen(
      {
        title: "Revoke this session?",
        message: `Session ${x.id} ends at once; the user must sign in again.`,
        confirmLabel: "Revoke session",
      },
      "Revoking the session",
      async () => {
        await api.call("POST", `/v1/sessions/${api.seg(x.id)}/revoke`);
        announce("Session revoked.", "success");
        await loadSessions();
      },
    );
  const revokeAll = () =>
    confirmThen(
      {
        title: `Revoke every session of ${u.email || u.id}?`,
        message: "Every session of this user ends at once.",
        confirmLabel: "Revoke all sessions",
      },
      "Revoking the sessions",
      async () => {
        const r = await api.call("POST", `/v1/users/${api.seg(u.id)}/sessions/revoke`);
        announce(`${r.revoked} sessions revoked.`, "success");
        await loadSessions();
      },
    );
  const setStatus = (status) =>
    confirmThen(
      status === "disabled"
        ? {
            title: `Disable ${u.email || u.id}?`,
            message: "Every session of this user ends, and they cannot sign in until enabled again.",
            confirmLabel: "Disable user",
          }
        : null,
      "Changing the user",
      async () => {
        await api.call("PATCH", `/v1/users/${api.seg(u.id)}`, { status });
        await reload();
        announce(`User ${status === "disabled" ? "disabled" : "enabled"}.`, "success");
      },
    );

  async function loadSessions() {
    try {
      const list = await api.get(`/v1/users/${api.seg(u.id)}/sessions`);
      sessions.replaceChildren(sessionTable("Sessions of this user", list.items || [], revokeOne));
    } catch (err) {
      sessions.replaceChildren(errorBox(err, "Loading the sessions"));
    }
  }

  const rolesOut = h("div", {});
  const rolesForm = h(
    "form",
    {
      class: "card",
      on: {
        submit: async (e) => {
          e.preventDefault();
          try {
            await api.call("PATCH", `/v1/users/${api.seg(u.id)}`, { roles: words(val(rolesForm, "roles")) });
            await reload();
            announce("Roles saved.", "success");
          } catch (err) {
            rolesOut.replaceChildren(errorBox(err, "Saving the roles"));
          }
        },
      },
    },
    h("h2", { text: "Roles given by an administrator" }),
    field("Roles", h("input", { name: "roles", value: (u.given_roles || []).join(", "), spellcheck: "false" }), "Kept apart from the roles the identity provider maps."),
    h("button", { type: "submit", text: "Save roles" }),
    rolesOut,
  );

  fill(
    main,
    h("p", { class: "crumbs" }, h("a", { href: `#/apps/${api.seg(u.app_id)}/users`, text: "Users" }), " / "),
    h("h1", { tabindex: "-1" }, u.email || u.name || u.id, " ", badge(u.status)),
    facts([
      ["Id", h("code", { text: u.id })],
      ["Name", u.name || "—"],
      ["Roles", chips(u.roles)],
      ["Mapped by the provider", chips(u.mapped_roles)],
      ["Identities", chips((u.identities || []).map((i) => `${i.idp_id}: ${i.subject}`))],
      ["Created", time(u.created_at)],
      ["Last login", time(u.last_login_at)],
    ]),
    h(
      "div",
      { class: "actions" },
      u.status === "active"
        ? button("Disable user", () => setStatus("disabled"), { class: "danger" })
        : button("Enable user", () => setStatus("active")),
      button("Revoke all sessions", revokeAll, { class: "danger secondary" }),
    ),
    h("h2", { text: "Sessions" }),
    sessions,
    rolesForm,
  );
  await loadSessions();
}

/** `#/apps/{id}/idps`: identity providers of one application. */
export async function renderIdps(main, [id]) {
  await appHeader(main, id, "idps");
  const box = h("div", {});

  const setStatus = (idp, status) =>
    confirmThen(
      status === "disabled"
        ? {
            title: `Disable ${idp.slug}?`,
            message: "Nobody can sign in through it, and the sessions it started end.",
            confirmLabel: "Disable provider",
          }
        : null,
      `Changing ${idp.slug}`,
      async () => {
        await api.call("PATCH", `/v1/idps/${api.seg(idp.id)}`, { status });
        announce(`${idp.slug} is now ${status}.`, "success");
        await load();
      },
    );
  const remove = (idp) =>
    confirmThen(
      {
        title: `Delete ${idp.slug}?`,
        message: "The connection is deleted and its users' sessions end. This cannot be undone.",
        confirmLabel: "Delete provider",
      },
      `Deleting ${idp.slug}`,
      async () => {
        await api.call("DELETE", `/v1/idps/${api.seg(idp.id)}`);
        announce(`${idp.slug} deleted.`, "success");
        await load();
      },
    );

  async function load() {
    try {
      const items = await api.all(`/v1/apps/${api.seg(id)}/idps`);
      box.replaceChildren(
        table(
          "Identity providers",
          [
            { label: "Slug", cell: (x) => h("code", { text: x.slug }) },
            { label: "Kind", cell: (x) => (x.kind === "oidc" ? "OpenID Connect" : "SAML 2.0") },
            { label: "Status", cell: (x) => badge(x.status) },
            { label: "Issuer or entity", cell: (x) => x.issuer || x.idp_entity_id || "—" },
            { label: "E-mail domains", cell: (x) => chips(x.email_domains) },
            { label: "Login URL", cell: (x) => h("code", { text: x.login_url }) },
            {
              label: "Actions",
              cell: (x) => [
                x.status === "active"
                  ? button("Disable", () => setStatus(x, "disabled"), { class: "secondary", "aria-label": `Disable ${x.slug}` })
                  : button("Enable", () => setStatus(x, "active"), { class: "secondary", "aria-label": `Enable ${x.slug}` }),
                " ",
                button("Delete", () => remove(x), { class: "link danger", "aria-label": `Delete ${x.slug}` }),
              ],
            },
          ],
          items,
        ),
      );
    } catch (err) {
      box.replaceChildren(errorBox(err, "Loading the identity providers"));
    }
  }

  const out = h("div", {});
  const kind = h("select", { name: "kind" }, h("option", { value: "oidc", text: "OpenID Connect" }), h("option", { value: "saml", text: "SAML 2.0" }));
  const oidc = h(
    "div",
    {},
    field("Issuer", h("input", { name: "issuer", type: "url", spellcheck: "false" }), "Its /.well-known/openid-configuration is fetched when the connection is made."),
    field("Client id", h("input", { name: "client_id", spellcheck: "false" })),
    field("Client secret", h("input", { name: "client_secret", type: "password", autocomplete: "off" })),
  );
  const saml = h(
    "div",
    { hidden: true },
    field("Identity provider metadata (XML)", h("textarea", { name: "idp_metadata_xml", rows: "5", spellcheck: "false" })),
  );
  kind.addEventListener("change", () => {
    oidc.hidden = kind.value !== "oidc";
    saml.hidden = kind.value !== "saml";
  });
  const form = h(
    "form",
    {
      class: "card",
      on: {
        submit: onSubmit(out, "Creating the identity provider", async () => {
          const body = {
            slug: val(form, "slug"),
            kind: kind.value,
            email_domains: words(val(form, "email_domains")),
            default_roles: words(val(form, "default_roles")),
          };
          if (kind.value === "oidc") {
            body.issuer = val(form, "issuer");
            body.client_id = val(form, "client_id");
            const secret = val(form, "client_secret");
            if (secret) {
              body.client_secret = secret;
            }
          } else {
            body.idp_metadata_xml = val(form, "idp_metadata_xml");
          }
          const idp = await api.call("POST", `/v1/apps/${api.seg(id)}/idps`, body);
          form.reset();
          kind.dispatchEvent(new Event("change"));
          announce(`Identity provider ${idp.slug} created. Its login URL is ${idp.login_url}.`, "success");
          await load();
        }),
      },
    },
    h("h2", { text: "Connect an identity provider" }),
    field("Slug", h("input", { name: "slug", required: true, pattern: "[a-z0-9-]{2,32}", spellcheck: "false" }), "2–32 of a-z, 0-9 and -, unique on this server; it names the login URLs."),
    field("Kind", kind),
    oidc,
    saml,
    field("E-mail domains (optional)", h("input", { name: "email_domains", spellcheck: "false" }), "Sign-in discovery sends these domains to this provider."),
    field("Default roles (optional)", h("input", { name: "default_roles", spellcheck: "false" })),
    h("button", { type: "submit", text: "Connect provider" }),
    out,
  );
  main.append(h("h2", { text: "Identity providers" }), box, form);
  await load();
}

/** `#/me`: who the console is signed in as. */
export async function renderMe(main) {
  main.replaceChildren(h("h1", { tabindex: "-1", text: "My sign-in" }));
  const me = api.session();
  if (api.signedIn() !== "session" || !me) {
    main.append(
      h(
        "p",
        {},
        "This tab is signed in with a pasted token. It is held in this tab's memory only and sent as ",
        h("code", { text: "Authorization: Bearer" }),
        "; signing out or closing the tab forgets it.",
      ),
    );
    return;
  }
  main.append(
    facts([
      ["User", me.user.email || me.user.name || me.user.id],
      ["Application", h("code", { text: me.user.app_id })],
      ["Roles", chips(me.user.roles)],
      ["This session", h("code", { text: me.session.id })],
      ["Expires", time(me.session.expires_at)],
    ]),
    h("h2", { text: "My sessions" }),
  );
  try {
    const list = await api.get("/v1/me/sessions");
    main.append(sessionTable("My sessions", list.items || [], null));
  } catch (err) {
    main.append(errorBox(err, "Loading my sessions"));
  }
}
