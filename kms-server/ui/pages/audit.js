// The audit log, newest first and paginated by the API's cursor, with filters and the
// state of the hash chain (GET /v1/audit/verify).

import * as api from "../api.js";
import { h, field, table, pagedList, time, errorBox, badge, val } from "../dom.js";

function chainState(result) {
  if (result.ok) {
    return h(
      "div",
      { class: "notice notice-ok", "data-chain": "ok" },
      h("p", {}, h("strong", { text: "The audit chain is intact. " }), `${result.events} events verified, each hash-linked to the one before.`),
    );
  }
  return h(
    "div",
    { class: "notice notice-bad", role: "alert", "data-chain": "broken" },
    h("p", {}, h("strong", { text: "The audit chain is broken. " }), `The first altered or missing event is number ${result.first_bad_seq}. See the incident runbook.`),
  );
}

/** An event's target, linked to its page where the console has one. */
function target(id) {
  if (!id) {
    return "—";
  }
  const code = h("code", { text: id });
  const page = id.startsWith("tok_") ? "tokens" : id.startsWith("app_") ? "apps" : id.startsWith("usr_") ? "users" : null;
  return page ? h("a", { href: `#/${page}/${api.seg(id)}` }, code) : code;
}

/** `#/audit`. */
export async function render(main) {
  main.replaceChildren(h("h1", { tabindex: "-1", text: "Audit log" }));
  const chain = h("section", { "aria-label": "State of the audit chain" }, h("p", { class: "meta", text: "Checking the chain…" }));
  const listBox = h("div", {});
  const filters = { action: "", actor: "", since: "" };

  const form = h(
    "form",
    {
      class: "card filters",
      on: {
        submit: (e) => {
          e.preventDefault();
          filters.action = val(form, "action");
          filters.actor = val(form, "actor");
          const since = val(form, "since");
          filters.since = since ? new Date(`${since}T00:00:00Z`).toISOString().replace(/\.\d+Z$/, "Z") : "";
          showList();
        },
      },
    },
    h("h2", { text: "Filter" }),
    h(
      "div",
      { class: "inline" },
      field("Action", h("input", { name: "action", spellcheck: "false", placeholder: "token.create" })),
      field("Actor", h("input", { name: "actor", spellcheck: "false", placeholder: "tok_…" })),
      field("Since (UTC date)", h("input", { name: "since", type: "date" })),
    ),
    h("button", { type: "submit", text: "Apply filter" }),
  );

  function showList() {
    listBox.replaceChildren(
      pagedList({
        label: "Audit events",
        load: (cursor) => api.get(`/v1/audit${api.query({ limit: 25, cursor, ...filters })}`),
        render: (items) =>
          table(
            "Audit events, newest first",
            [
              { label: "Seq", cell: (e) => String(e.seq) },
              { label: "At", cell: (e) => time(e.at) },
              { label: "Actor", cell: (e) => h("code", { text: e.actor }) },
              { label: "Action", cell: (e) => h("code", { text: e.action }) },
              { label: "Target", cell: (e) => target(e.target) },
              { label: "Outcome", cell: (e) => badge(e.outcome) },
              { label: "From", cell: (e) => e.ip || "—" },
              {
                label: "Details",
                cell: (e) =>
                  e.details && Object.keys(e.details).length
                    ? h("details", {}, h("summary", { text: "Show" }), h("pre", { text: JSON.stringify(e.details, null, 2) }))
                    : "—",
              },
            ],
            items,
          ),
      }),
    );
  }

  main.append(chain, form, listBox);
  showList();
  try {
    chain.replaceChildren(chainState(await api.get("/v1/audit/verify")));
  } catch (err) {
    chain.replaceChildren(errorBox(err, "Checking the audit chain"));
  }
}
