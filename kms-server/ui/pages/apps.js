// Applications: the list (paginated), creating one, disabling and enabling; one
// application's page with its tokens; its usage.

import * as api from "../api.js";
import {
  fill, h, field, table, pagedList, badge, time, button, confirmThen, onSubmit, announce, facts, val,
} from "../dom.js";
import { tokenList, tokenForm } from "./tokens.js";
import { usagePanel } from "./usage.js";

/** The application kms itself belongs to (the root token's); it cannot be disabled. */
const SYSTEM_APP = "app_system";

/** The sub-navigation of one application's pages. */
function appTabs(id, current) {
  const tabs = [
    ["tokens", `#/apps/${api.seg(id)}`, "Tokens"],
    ["users", `#/apps/${api.seg(id)}/users`, "Users"],
    ["idps", `#/apps/${api.seg(id)}/idps`, "Identity providers"],
    ["usage", `#/apps/${api.seg(id)}/usage`, "Usage"],
  ];
  return h(
    "nav",
    { class: "tabs", "aria-label": "This application" },
    h(
      "ul",
      {},
      tabs.map(([key, href, label]) =>
        h("li", {}, h("a", { href, text: label, "aria-current": key === current ? "page" : null })),
      ),
    ),
  );
}

/** The heading block of one application's pages: name, status, id. */
export async function appHeader(main, id, current) {
  const app = await api.get(`/v1/apps/${api.seg(id)}`);
  fill(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/apps", text: "Applications" }), " / "),
    h("h1", { tabindex: "-1" }, app.name, " ", badge(app.status)),
    facts([
      ["Id", h("code", { text: app.id })],
      ["Token prefix", h("code", { text: app.token_prefix })],
      ["Created", time(app.created_at)],
    ]),
    appTabs(id, current),
  );
  return app;
}

function setStatus(app, status, reload) {
  const dialog =
    status === "disabled"
      ? {
          title: `Disable ${app.name}?`,
          message: "Every token of this application stops verifying until it is enabled again.",
          confirmLabel: "Disable application",
        }
      : null;
  return confirmThen(dialog, `Changing ${app.name}`, async () => {
    await api.call("PATCH", `/v1/apps/${api.seg(app.id)}`, { status });
    announce(`${app.name} is now ${status}.`, "success");
    reload();
  });
}

/** `#/apps`: every application, a form to create one. */
export function renderList(main) {
  main.replaceChildren(h("h1", { tabindex: "-1", text: "Applications" }));
  const list = pagedList({
    label: "Applications",
    load: (cursor) => api.get(`/v1/apps${api.query({ limit: 20, cursor })}`),
    render: (items) =>
      table(
        "Applications",
        [
          { label: "Name", cell: (a) => h("a", { href: `#/apps/${api.seg(a.id)}`, text: a.name }) },
          { label: "Status", cell: (a) => badge(a.status) },
          { label: "Prefix", cell: (a) => h("code", { text: a.token_prefix }) },
          { label: "Created", cell: (a) => time(a.created_at) },
          {
            label: "Actions",
            cell: (a) =>
              a.id === SYSTEM_APP
                ? h("span", { class: "meta", text: "kms itself: cannot be disabled" })
                : a.status === "active"
                ? button("Disable", () => setStatus(a, "disabled", list.reload), {
                    class: "secondary",
                    "aria-label": `Disable ${a.name}`,
                  })
                : button("Enable", () => setStatus(a, "active", list.reload), {
                    class: "secondary",
                    "aria-label": `Enable ${a.name}`,
                  }),
          },
        ],
        items,
      ),
  });

  const out = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    {
      class: "card",
      on: {
        submit: onSubmit(out, "Creating the application", async () => {
          const body = { name: val(form, "name") };
          const prefix = val(form, "token_prefix");
          if (prefix) {
            body.token_prefix = prefix;
          }
          const app = await api.call("POST", "/v1/apps", body);
          form.reset();
          announce(`Application ${app.name} created.`, "success");
          list.reload();
        }),
      },
    },
    h("h2", { text: "Create an application" }),
    field("Name", h("input", { name: "name", required: true, maxlength: "128" })),
    field(
      "Token prefix (optional)",
      h("input", { name: "token_prefix", pattern: "[a-z][a-z0-9]{1,15}", spellcheck: "false" }),
      "2–16 lower-case letters and digits, starting with a letter; kms by default.",
    ),
    h("button", { type: "submit", text: "Create application" }),
    out,
  );
  main.append(list, form);
}

/** `#/apps/{id}`: one application, its tokens, a form to create one. */
export async function renderApp(main, [id]) {
  const app = await appHeader(main, id, "tokens");
  const actions = h(
    "div",
    { class: "actions" },
    app.id === SYSTEM_APP
      ? null
      : app.status === "active"
      ? button("Disable application", () => setStatus(app, "disabled", () => renderApp(main, [id])), { class: "danger" })
      : button("Enable application", () => setStatus(app, "active", () => renderApp(main, [id]))),
  );
  const list = tokenList(app.id);
  main.append(actions, h("h2", { text: "Tokens" }), list, await tokenForm(app, list));
}

/** `#/apps/{id}/usage`: verification counts over time. */
export async function renderUsage(main, [id]) {
  await appHeader(main, id, "usage");
  main.append(usagePanel(`/v1/apps/${api.seg(id)}/usage`, "this application"));
}
