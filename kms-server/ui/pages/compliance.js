// The compliance report (GET /v1/reports/compliance): each finding passed or failed, with
// the objects it names. A server without the report answers 404: the page says so.

import * as api from "../api.js";
import { h, table, badge, time, errorBox } from "../dom.js";

function items(list) {
  if (!list || list.length === 0) {
    return "—";
  }
  const shown = list.slice(0, 10).map((id) => {
    const text = typeof id === "string" ? id : JSON.stringify(id);
    return h("li", {}, text.startsWith("tok_") ? h("a", { href: `#/tokens/${api.seg(text)}` }, h("code", { text })) : h("code", { text }));
  });
  return h("ul", { class: "chips" }, shown, list.length > 10 ? h("li", { text: `and ${list.length - 10} more` }) : null);
}

/** `#/compliance`. */
export async function render(main) {
  main.replaceChildren(h("h1", { tabindex: "-1", text: "Compliance report" }));
  let report;
  try {
    report = await api.get("/v1/reports/compliance");
  } catch (err) {
    main.append(
      err.status === 404
        ? h(
            "div",
            { class: "notice", role: "note" },
            h("p", {}, h("strong", { text: "The compliance report is not available on this server. " }), "It does not offer GET /v1/reports/compliance yet (it answered 404)."),
            h("p", { class: "meta", text: `The API said: ${err.message}` }),
          )
        : errorBox(err, "Loading the report"),
    );
    return;
  }
  const findings = Array.isArray(report.findings) ? report.findings : [];
  const failed = findings.filter((f) => f.status === "fail").length;
  main.append(
    h("p", {}, `Generated ${report.generated_at ? "" : "now"}`, report.generated_at ? time(report.generated_at) : null, `: ${findings.length} checks, ${failed} failing.`),
    table(
      "Findings",
      [
        { label: "Check", cell: (f) => [h("strong", { text: f.title || f.id }), h("br"), h("code", { class: "meta", text: f.id })] },
        { label: "Result", cell: (f) => badge(f.status) },
        { label: "Count", cell: (f) => String(f.count ?? (f.items || []).length) },
        { label: "Objects", cell: (f) => items(f.items) },
      ],
      findings,
    ),
  );
}
