// Tokens (API keys): an application's list (paginated by the API's cursor), creation
// (the plaintext shown once), and one token's page: revoke, rotate, delete, limits, usage.

import * as api from "../api.js";
import {
  fill, h, field, table, pagedList, badge, time, button, confirmDialog, confirmThen, onSubmit, announce,
  announceNext, errorBox, facts, chips, secretPanel, checkbox, val, words, checked,
} from "../dom.js";
import { usagePanel } from "./usage.js";

const EXPIRY = [
  ["", "Never"],
  ["3600", "In 1 hour"],
  ["86400", "In 1 day"],
  ["2592000", "In 30 days"],
  ["7776000", "In 90 days"],
  ["31536000", "In 1 year"],
];

/** The paginated token list of application `appId`. */
export function tokenList(appId) {
  return pagedList({
    label: "Tokens",
    load: (cursor) => api.get(`/v1/apps/${api.seg(appId)}/tokens${api.query({ limit: 20, cursor })}`),
    render: (items) =>
      table(
        "Tokens of this application",
        [
          { label: "Name", cell: (t) => h("a", { href: `#/tokens/${api.seg(t.id)}`, text: t.name || t.id }) },
          { label: "Starts with", cell: (t) => h("code", { text: `${t.start}…` }) },
          { label: "Status", cell: (t) => badge(t.status) },
          { label: "Scopes", cell: (t) => chips(t.scopes) },
          { label: "Roles", cell: (t) => chips(t.roles) },
          { label: "Expires", cell: (t) => time(t.expires_at) },
          { label: "Last used", cell: (t) => time(t.last_used_at) },
        ],
        items,
      ),
  });
}

/** A fieldset of checkboxes named `name`, one per value; a text input if `values` is null. */
function choices(legend, name, values, hint) {
  if (values === null) {
    return field(`${legend} (separated by spaces or commas)`, h("input", { name: `${name}_text`, spellcheck: "false" }), hint);
  }
  return h(
    "fieldset",
    { class: "choices" },
    h("legend", { text: legend }),
    values.length === 0 ? h("p", { class: "meta", text: "None defined." }) : null,
    h("div", { class: "choice-list" }, values.map((v) => checkbox(v, { name, value: v }))),
  );
}

function chosen(form, name) {
  const text = form.elements.namedItem(`${name}_text`);
  return text ? words(text.value) : checked(form, name);
}

/** The limits part of the creation and limits forms; values from `token` when given. */
function limitFields(token) {
  const rl = token && token.ratelimit ? token.ratelimit : null;
  return [
    h(
      "fieldset",
      { class: "inline" },
      h("legend", { text: "Rate limit (optional)" }),
      field("Verifications", h("input", { name: "rl_limit", type: "number", min: "1", value: rl ? rl.limit : "" })),
      field("per seconds", h("input", { name: "rl_per", type: "number", min: "1", value: rl ? rl.per_seconds : "" })),
    ),
    field(
      "Uses left (optional)",
      h("input", { name: "uses", type: "number", min: "0", value: token && token.uses !== undefined && token.uses !== null ? token.uses : "" }),
      "Each valid verification spends one; at zero the token answers USAGE_EXCEEDED.",
    ),
    field(
      "Allowed networks (optional)",
      h("input", { name: "ip_allow", spellcheck: "false", value: token && token.ip_allow ? token.ip_allow.join(", ") : "" }),
      "CIDR blocks such as 10.0.0.0/8, separated by commas.",
    ),
  ];
}

/** The limits of the form, as the API takes them; `clear` sends null for empty ones. */
function limitsOf(form, clear) {
  const body = {};
  const limit = val(form, "rl_limit");
  const per = val(form, "rl_per");
  if (limit || per) {
    body.ratelimit = { limit: Number(limit), per_seconds: Number(per) };
  } else if (clear) {
    body.ratelimit = null;
  }
  const uses = val(form, "uses");
  if (uses) {
    body.uses = Number(uses);
  } else if (clear) {
    body.uses = null;
  }
  const nets = words(val(form, "ip_allow"));
  if (nets.length > 0) {
    body.ip_allow = nets;
  } else if (clear) {
    body.ip_allow = null;
  }
  return body;
}

async function listOrNull(path, key) {
  try {
    return (await api.all(path)).map((x) => x[key]);
  } catch {
    return null;
  }
}

/** The token creation form of `app`; a created token's plaintext is shown once above it. */
export async function tokenForm(app, list) {
  const [scopes, roles] = await Promise.all([
    listOrNull("/v1/permissions", "scope"),
    listOrNull("/v1/roles", "name"),
  ]);
  const out = h("div", {});
  const form = h(
    "form",
    {
      class: "card",
      on: {
        submit: onSubmit(out, "Creating the token", async () => {
          const body = {
            name: val(form, "name"),
            scopes: chosen(form, "scopes"),
            roles: chosen(form, "roles"),
            ...limitsOf(form, false),
          };
          const expires = val(form, "expires_in");
          if (expires) {
            body.expires_in = Number(expires);
          }
          const created = await api.call("POST", `/v1/apps/${api.seg(app.id)}/tokens`, body);
          form.reset();
          // The plaintext lives in this panel only; leaving the page drops it.
          const panel = secretPanel(
            `Token ${created.name} created`,
            created.token,
            `Id ${created.id}. Its scopes: ${created.scopes.join(", ") || "none"}; roles: ${created.roles.join(", ") || "none"}.`,
          );
          out.replaceChildren(panel);
          announce(`Token ${created.name} created. Copy its value now: it is shown only once.`, "success");
          panel.querySelector("input").focus();
          list.reload();
        }),
      },
    },
    h("h2", { text: "Create a token" }),
    field("Name", h("input", { name: "name", required: true, maxlength: "128" })),
    choices("Scopes", "scopes", scopes, "You can only give scopes your own credential holds."),
    choices("Roles", "roles", roles),
    field("Expires", h("select", { name: "expires_in" }, EXPIRY.map(([v, label]) => h("option", { value: v, text: label })))),
    h("details", {}, h("summary", { text: "Limits" }), limitFields(null)),
    h("button", { type: "submit", text: "Create token" }),
  );
  return h("div", {}, out, form);
}

/** `#/tokens/{id}`: one token. */
export async function renderToken(main, [id], ctx) {
  const t = await api.get(`/v1/tokens/${api.seg(id)}`);
  let appName = "Application";
  try {
    appName = (await api.get(`/v1/apps/${api.seg(t.app_id)}`)).name;
  } catch {
    // A caller without app.read still manages the token; the crumb says "Application".
  }
  const appLink = `#/apps/${api.seg(t.app_id)}`;
  const out = h("div", {});
  const reload = async () => {
    await renderToken(main, [id], ctx);
    main.querySelector("h1").focus();
  };

  const revoke = () =>
    confirmThen(
      {
        title: `Revoke ${t.name}?`,
        message: "The token stops verifying at once, on every node. This cannot be undone.",
        confirmLabel: "Revoke token",
      },
      "Revoking the token",
      async () => {
        await api.call("POST", `/v1/tokens/${api.seg(t.id)}/revoke`);
        await reload();
        announce(`Token ${t.name} revoked.`, "success");
      },
    );

  const remove = () =>
    confirmThen(
      {
        title: `Delete ${t.name}?`,
        message: "The token and its record are deleted; it stops verifying at once. This cannot be undone.",
        confirmLabel: "Delete token",
      },
      "Deleting the token",
      async () => {
        await api.call("DELETE", `/v1/tokens/${api.seg(t.id)}`);
        announceNext(`Token ${t.name} deleted.`, "success");
        ctx.go(`/apps/${api.seg(t.app_id)}`);
      },
    );

  const rotateForm = h(
    "form",
    {
      class: "card",
      on: {
        submit: async (e) => {
          e.preventDefault();
          const grace = val(rotateForm, "grace_seconds");
          const ok = await confirmDialog({
            title: `Rotate ${t.name}?`,
            message: `A new token with the same scopes, roles and metadata is made; this one keeps working for ${grace || 0} seconds, then expires.`,
            confirmLabel: "Rotate token",
          });
          if (!ok) {
            return;
          }
          try {
            const created = await api.call("POST", `/v1/tokens/${api.seg(t.id)}/rotate`, {
              grace_seconds: Number(grace || 0),
            });
            const panel = secretPanel(
              `Rotated: the new token ${created.name}`,
              created.token,
              `Its id is ${created.id}; the old token expires after the grace period.`,
            );
            out.replaceChildren(
              panel,
              h("p", {}, h("a", { href: `#/tokens/${api.seg(created.id)}`, text: "Open the new token's page" }), " (its value will not be shown there)."),
            );
            announce("Token rotated. Copy the new value now: it is shown only once.", "success");
            panel.querySelector("input").focus();
          } catch (err) {
            out.replaceChildren(errorBox(err, "Rotating the token"));
          }
        },
      },
    },
    h("h2", { text: "Rotate" }),
    field("Grace period in seconds", h("input", { name: "grace_seconds", type: "number", min: "0", value: "3600" }), "How long the current token keeps working next to the new one."),
    h("button", { type: "submit", text: "Rotate token" }),
  );

  const limitsOut = h("div", {});
  const limitsForm = h(
    "form",
    {
      class: "card",
      on: {
        submit: onSubmit(limitsOut, "Saving the limits", async () => {
          await api.call("PATCH", `/v1/tokens/${api.seg(t.id)}`, limitsOf(limitsForm, true));
          await reload();
          announce("Limits saved.", "success");
        }),
      },
    },
    h("h2", { text: "Limits" }),
    limitFields(t),
    h("button", { type: "submit", text: "Save limits" }),
    limitsOut,
  );

  const active = t.status === "active";
  fill(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/apps", text: "Applications" }), " / ", h("a", { href: appLink, text: appName }), " / "),
    h("h1", { tabindex: "-1" }, `Token ${t.name}`, " ", badge(t.status)),
    facts([
      ["Id", h("code", { text: t.id })],
      ["Starts with", h("code", { text: `${t.start}…` })],
      ["Application", h("a", { href: appLink }, h("code", { text: t.app_id }))],
      ["Scopes", chips(t.scopes)],
      ["Roles", chips(t.roles)],
      t.grants && t.grants.length ? ["Conditional grants", chips(t.grants.map((g) => `${g.scope || g.role} when ${g.when || "always"}`))] : null,
      ["Created", time(t.created_at)],
      ["Expires", time(t.expires_at)],
      ["Last used", time(t.last_used_at)],
      t.revoked_at ? ["Revoked", time(t.revoked_at)] : null,
      t.rotated_from ? ["Rotated from", h("a", { href: `#/tokens/${api.seg(t.rotated_from)}`, text: t.rotated_from })] : null,
      t.rotated_to ? ["Rotated to", h("a", { href: `#/tokens/${api.seg(t.rotated_to)}`, text: t.rotated_to })] : null,
      Object.keys(t.metadata || {}).length ? ["Metadata", h("pre", { text: JSON.stringify(t.metadata, null, 2) })] : null,
    ]),
    h(
      "div",
      { class: "actions" },
      active ? button("Revoke token", revoke, { class: "danger" }) : null,
      button("Delete token", remove, { class: "danger secondary" }),
    ),
    out,
    active ? h("div", { class: "grid-2" }, rotateForm, limitsForm) : null,
    h("h2", { text: "Usage" }),
    usagePanel(`/v1/tokens/${api.seg(t.id)}/usage`, "this token"),
  );
}
