// Usage charts: verification counts per period and per code, from
// `GET /v1/apps/{id}/usage` and `GET /v1/tokens/{id}/usage`. A server without those
// endpoints answers 404; the panel then says that usage is not available.

import * as api from "../api.js";
import { h, field, table, errorBox, facts } from "../dom.js";
import { barChart, codesOf, codeClass } from "../chart.js";

const RANGES = [
  ["24h", "Last 24 hours", 24 * 3600, "hour"],
  ["7d", "Last 7 days", 7 * 86400, "day"],
  ["30d", "Last 30 days", 30 * 86400, "day"],
];

function tickFor(granularity) {
  return (start) => {
    const d = new Date(start);
    if (Number.isNaN(d.getTime())) {
      return String(start);
    }
    const iso = d.toISOString();
    return granularity === "hour" ? `${iso.slice(11, 13)}:00` : iso.slice(5, 10);
  };
}

function notAvailable(err) {
  return h(
    "div",
    { class: "notice", role: "note" },
    h("p", {}, h("strong", { text: "Usage statistics are not available on this server. " }), "It does not offer the usage endpoints yet (it answered 404)."),
    h("p", { class: "meta", text: `The API said: ${err.message}` }),
  );
}

function render(data, what) {
  const g = data.granularity || "day";
  const series = Array.isArray(data.series) ? data.series : [];
  const totals = data.totals || { total: 0, by_code: {} };
  const tick = tickFor(g);
  const codes = codesOf(series.length ? series : [{ by_code: totals.by_code || {} }]);
  const trend = data.trend || null;
  const change =
    trend && typeof trend.change_ratio === "number"
      ? `${trend.change_ratio >= 0 ? "+" : ""}${Math.round(trend.change_ratio * 100)} % against the previous period (${trend.previous_period_total})`
      : "—";
  return h(
    "div",
    {},
    facts([
      ["Verifications", String(totals.total || 0)],
      ["Trend", change],
      ...Object.entries(totals.by_code || {}).map(([code, n]) => [code, String(n)]),
    ]),
    series.length
      ? h(
          "figure",
          { class: "chart-figure" },
          barChart(series, `Verifications of ${what} per ${g}`, tick),
          h(
            "figcaption",
            {},
            h("ul", { class: "legend" }, codes.map((c) => h("li", {}, h("span", { class: `swatch ${codeClass(c)}`, "aria-hidden": "true" }), c))),
          ),
        )
      : h("p", { class: "meta", text: "No verifications in this period." }),
    h(
      "details",
      {},
      h("summary", { text: "The numbers as a table" }),
      table(
        `Verifications of ${what} per ${g}`,
        [
          { label: "Period", cell: (p) => tick(p.start) },
          { label: "Total", cell: (p) => String(p.total || 0) },
          ...codes.map((c) => ({ label: c, cell: (p) => String((p.by_code && p.by_code[c]) || 0) })),
        ],
        series,
      ),
    ),
  );
}

/**
 * The usage panel of `path`; `ranged` offers a period and granularity (the application's
 * endpoint takes `from`, `to` and `granularity`).
 */
export function usagePanel(path, what, ranged = path.startsWith("/v1/apps/")) {
  const body = h("div", { class: "usage-body" }, h("p", { class: "meta", text: "Loading usage…" }));
  const select = h("select", { name: "range" }, RANGES.map(([v, label]) => h("option", { value: v, text: label })));
  select.value = "7d";

  async function load() {
    let url = path;
    if (ranged) {
      const [, , seconds, granularity] = RANGES.find(([v]) => v === select.value) || RANGES[1];
      const to = new Date();
      const from = new Date(to.getTime() - seconds * 1000);
      url += api.query({ from: from.toISOString().replace(/\.\d+Z$/, "Z"), to: to.toISOString().replace(/\.\d+Z$/, "Z"), granularity });
    }
    try {
      const data = await api.get(url);
      body.replaceChildren(render(data, what));
    } catch (err) {
      body.replaceChildren(err.status === 404 ? notAvailable(err) : errorBox(err, "Loading usage"));
    }
  }

  select.addEventListener("change", load);
  load();
  return h("section", { class: "card usage", "aria-label": `Usage of ${what}` }, ranged ? field("Period", select) : null, body);
}
