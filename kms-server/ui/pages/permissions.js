// Permissions as the scope tree: `billing` covers `billing.invoices.read`, so scopes are
// shown nested by their segments, each with its description and `implies` edges.

import * as api from "../api.js";
import { h, field, button, confirmThen, onSubmit, announce, errorBox, chips, val, words } from "../dom.js";

/** The tree of `permissions`: nodes keyed by segment, `perm` set where a scope is defined. */
export function scopeTree(permissions) {
  const root = { children: new Map(), perm: null, path: "" };
  for (const p of permissions) {
    let node = root;
    const parts = p.scope.split(".");
    parts.forEach((part, i) => {
      if (!node.children.has(part)) {
        node.children.set(part, { children: new Map(), perm: null, path: parts.slice(0, i + 1).join(".") });
      }
      node = node.children.get(part);
    });
    node.perm = p;
  }
  return root;
}

function count(node) {
  let n = node.perm ? 1 : 0;
  for (const c of node.children.values()) {
    n += count(c);
  }
  return n;
}

function renderNode(node, onDelete) {
  const p = node.perm;
  const label = h(
    "span",
    { class: "scope-label" },
    h("code", { text: node.path }),
    p ? null : h("span", { class: "meta", text: " (prefix only)" }),
    p && p.description ? h("span", { class: "desc", text: ` — ${p.description}` }) : null,
  );
  const extra = p
    ? h(
        "span",
        { class: "scope-extra" },
        p.implies && p.implies.length ? h("span", { class: "implies" }, "implies ", chips(p.implies)) : null,
        button("Delete", () => onDelete(p.scope), { class: "link danger", "aria-label": `Delete permission ${p.scope}` }),
      )
    : null;
  if (node.children.size === 0) {
    return h("li", {}, label, extra);
  }
  const kids = [...node.children.entries()].sort(([a], [b]) => a.localeCompare(b));
  return h(
    "li",
    {},
    h(
      "details",
      { open: true },
      h("summary", {}, label, h("span", { class: "meta", text: ` · ${count(node) - (p ? 1 : 0)} below` })),
      extra,
      h("ul", {}, kids.map(([, c]) => renderNode(c, onDelete))),
    ),
  );
}

/** `#/permissions`. */
export async function render(main) {
  main.replaceChildren(h("h1", { tabindex: "-1", text: "Permissions" }));
  const treeBox = h("section", { "aria-labelledby": "scope-tree-title" });
  main.append(
    h("p", { text: "A grant of a scope covers every scope below it; admin and * cover everything; implies edges add the scopes named." }),
    treeBox,
  );

  function onDelete(scope) {
    return confirmThen(
      {
        title: `Delete ${scope}?`,
        message: "The permission is removed from the policy. A permission still granted by a role or a token cannot be deleted.",
        confirmLabel: "Delete permission",
      },
      `Deleting ${scope}`,
      async () => {
        await api.call("DELETE", `/v1/permissions/${api.seg(scope)}`);
        announce(`Permission ${scope} deleted.`, "success");
        await load();
      },
    );
  }

  async function load() {
    try {
      const items = await api.all("/v1/permissions");
      const tree = scopeTree(items);
      const kids = [...tree.children.entries()].sort(([a], [b]) => a.localeCompare(b));
      treeBox.replaceChildren(
        h("h2", { id: "scope-tree-title", text: `Scope tree (${items.length} permissions)` }),
        h("ul", { class: "tree" }, kids.map(([, c]) => renderNode(c, onDelete))),
      );
    } catch (err) {
      treeBox.replaceChildren(errorBox(err, "Loading the permissions"));
    }
  }

  const out = h("div", {});
  const form = h(
    "form",
    {
      class: "card",
      on: {
        submit: onSubmit(out, "Creating the permission", async () => {
          const body = { scope: val(form, "scope"), implies: words(val(form, "implies")) };
          const description = val(form, "description");
          if (description) {
            body.description = description;
          }
          await api.call("POST", "/v1/permissions", body);
          form.reset();
          announce(`Permission ${body.scope} created.`, "success");
          await load();
        }),
      },
    },
    h("h2", { text: "Create a permission" }),
    field("Scope", h("input", { name: "scope", required: true, spellcheck: "false" }), "1–8 segments of a-z, 0-9, _ and - joined by dots, such as billing.invoices.read."),
    field("Description (optional)", h("input", { name: "description" })),
    field("Implies (optional)", h("input", { name: "implies", spellcheck: "false" }), "Scopes this one implies, separated by spaces or commas."),
    h("button", { type: "submit", text: "Create permission" }),
    out,
  );
  main.append(form);
  await load();
}
