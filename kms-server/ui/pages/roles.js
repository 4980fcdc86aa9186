// Roles as their inheritance graph (an SVG drawing of the DAG, with the same facts as a
// list for screen readers), each with what it finally grants (`effective`).

import * as api from "../api.js";
import {
  h, s, field, button, confirmThen, onSubmit, announce, errorBox, chips, val, words,
} from "../dom.js";

/** Levels of the DAG: a role sits one row below the deepest role it inherits. */
export function levels(roles) {
  const byName = new Map(roles.map((r) => [r.name, r]));
  const depth = new Map();
  const visit = (name, seen) => {
    if (depth.has(name)) {
      return depth.get(name);
    }
    if (seen.has(name)) {
      return 0; // the API refuses cycles; never loop on a bad answer
    }
    seen.add(name);
    const r = byName.get(name);
    const parents = r ? (r.inherits || []).filter((p) => byName.has(p)) : [];
    const d = parents.length ? 1 + Math.max(...parents.map((p) => visit(p, seen))) : 0;
    depth.set(name, d);
    return d;
  };
  for (const r of roles) {
    visit(r.name, new Set());
  }
  const rows = [];
  for (const r of roles) {
    const d = depth.get(r.name) || 0;
    (rows[d] = rows[d] || []).push(r.name);
  }
  return rows.map((row) => (row || []).sort());
}

/** The SVG drawing of the inheritance graph. */
function graph(roles) {
  const rows = levels(roles);
  const nodeH = 34;
  const rowGap = 70;
  const colW = 190;
  const cols = Math.max(1, ...rows.map((r) => r.length));
  const width = cols * colW + 20;
  const height = rows.length * (nodeH + rowGap) - rowGap + 20;
  const pos = new Map();
  rows.forEach((row, y) => {
    const offset = (width - row.length * colW) / 2;
    row.forEach((name, x) => {
      pos.set(name, { x: offset + x * colW + colW / 2, y: 10 + y * (nodeH + rowGap) });
    });
  });
  const edges = [];
  for (const r of roles) {
    for (const p of r.inherits || []) {
      if (pos.has(p)) {
        edges.push([r.name, p]);
      }
    }
  }
  const description =
    edges.length === 0
      ? `${roles.length} roles; none inherits another.`
      : `Role inheritance: ${edges.map(([a, b]) => `${a} inherits ${b}`).join("; ")}.`;
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "graph",
    role: "img",
    "aria-label": description,
    width,
    height,
  });
  svg.append(
    s("title", { text: description }),
    s(
      "defs",
      {},
      s(
        "marker",
        { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "8", markerHeight: "8", orient: "auto-start-reverse" },
        s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }),
      ),
    ),
  );
  for (const [from, to] of edges) {
    const a = pos.get(from);
    const b = pos.get(to);
    // From the inheriting role's top edge up to the inherited role's bottom edge.
    svg.append(s("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y + nodeH, class: "edge", "marker-end": "url(#arrow)" }));
  }
  for (const [name, p] of pos) {
    const w = Math.min(colW - 16, Math.max(70, name.length * 8 + 24));
    svg.append(
      s(
        "g",
        { class: "node" },
        s("rect", { x: p.x - w / 2, y: p.y, width: w, height: nodeH, rx: 6 }),
        s("text", { x: p.x, y: p.y + nodeH / 2 + 5, "text-anchor": "middle", text: name.length > 20 ? `${name.slice(0, 19)}…` : name }),
      ),
    );
  }
  return svg;
}

/** `#/roles`. */
export async function render(main) {
  main.replaceChildren(h("h1", { tabindex: "-1", text: "Roles" }));
  const box = h("div", {});
  main.append(box);

  function onDelete(name) {
    return confirmThen(
      {
        title: `Delete role ${name}?`,
        message: "Tokens and users holding it lose what it grants at once. A role still inherited or granted cannot be deleted.",
        confirmLabel: "Delete role",
      },
      `Deleting ${name}`,
      async () => {
        await api.call("DELETE", `/v1/roles/${api.seg(name)}`);
        announce(`Role ${name} deleted.`, "success");
        await load();
      },
    );
  }

  async function load() {
    let roles;
    try {
      roles = await api.all("/v1/roles");
    } catch (err) {
      box.replaceChildren(errorBox(err, "Loading the roles"));
      return;
    }
    roles.sort((a, b) => a.name.localeCompare(b.name));
    const inheritedBy = new Map();
    for (const r of roles) {
      for (const p of r.inherits || []) {
        inheritedBy.set(p, [...(inheritedBy.get(p) || []), r.name]);
      }
    }
    box.replaceChildren(
      h("h2", { text: "Inheritance graph" }),
      roles.length
        ? h("figure", { class: "graph-figure" }, h("div", { class: "graph-scroll", role: "region", tabindex: "0", "aria-label": "Role graph (scrolls sideways when wide)" }, graph(roles)), h("figcaption", { text: "An arrow points from a role to the role it inherits." }))
        : h("p", { text: "No roles yet." }),
      h("h2", { text: "What each role grants" }),
      h(
        "ul",
        { class: "role-list" },
        roles.map((r) =>
          h(
            "li",
            { class: "card role", "data-role": r.name },
            h("h3", {}, h("code", { text: r.name })),
            r.description ? h("p", { text: r.description }) : null,
            h(
              "dl",
              { class: "facts" },
              h("dt", { text: "Permissions" }), h("dd", {}, chips(r.permissions)),
              h("dt", { text: "Inherits" }), h("dd", {}, chips(r.inherits)),
              h("dt", { text: "Inherited by" }), h("dd", {}, chips(inheritedBy.get(r.name) || [])),
              r.grants && r.grants.length
                ? [h("dt", { text: "Conditional" }), h("dd", {}, chips(r.grants.map((g) => `${g.scope} when ${g.when}`)))]
                : null,
              h("dt", { text: "Effective scopes" }), h("dd", { class: "effective" }, chips(r.effective)),
            ),
            button("Delete", () => onDelete(r.name), { class: "link danger", "aria-label": `Delete role ${r.name}` }),
          ),
        ),
      ),
    );
  }

  const out = h("div", {});
  const form = h(
    "form",
    {
      class: "card",
      on: {
        submit: onSubmit(out, "Creating the role", async () => {
          const body = {
            name: val(form, "name"),
            permissions: words(val(form, "permissions")),
            inherits: words(val(form, "inherits")),
          };
          const role = await api.call("POST", "/v1/roles", body);
          form.reset();
          announce(`Role ${role.name} created; it grants ${role.effective.length} scopes.`, "success");
          await load();
        }),
      },
    },
    h("h2", { text: "Create a role" }),
    field("Name", h("input", { name: "name", required: true, spellcheck: "false" })),
    field("Permissions", h("input", { name: "permissions", spellcheck: "false" }), "Scopes, separated by spaces or commas."),
    field("Inherits", h("input", { name: "inherits", spellcheck: "false" }), "Roles whose grants this one also has."),
    h("button", { type: "submit", text: "Create role" }),
    out,
  );
  await load();
  main.append(form);
}
