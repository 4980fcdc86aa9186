// A small SVG bar chart: one bar per period, stacked by verification code, with a text
// alternative (the same numbers as a table follow the chart wherever it is used).

import { s } from "./dom.js";

/** The order (and colour class) of verification codes in a stack. */
const CODES = [
  "VALID", "INSUFFICIENT_PERMISSIONS", "RATE_LIMITED", "USAGE_EXCEEDED", "EXPIRED",
  "REVOKED", "DISABLED", "FORBIDDEN", "NOT_FOUND", "MALFORMED",
];

/** The codes present in `series`, in CODES order, unknown ones last. */
export function codesOf(series) {
  const seen = new Set();
  for (const p of series) {
    for (const code of Object.keys(p.by_code || {})) {
      seen.add(code);
    }
  }
  const known = CODES.filter((c) => seen.has(c));
  const other = [...seen].filter((c) => !CODES.includes(c)).sort();
  return [...known, ...other];
}

/** The CSS class of `code`'s colour. */
export function codeClass(code) {
  const i = CODES.indexOf(code);
  return `code-${i >= 0 ? i : "other"}`;
}

/**
 * The chart of `series` (`[{start, total, by_code}]`), described by `label`.
 * `tick(start)` gives the label under a bar.
 */
export function barChart(series, label, tick) {
  const width = 640;
  const height = 220;
  const left = 44;
  const bottom = 28;
  const top = 10;
  const plotH = height - bottom - top;
  const max = Math.max(1, ...series.map((p) => p.total || 0));
  const n = Math.max(1, series.length);
  const slot = (width - left - 8) / n;
  const barW = Math.max(2, Math.min(40, slot * 0.7));
  const codes = codesOf(series);

  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart",
    role: "img",
    "aria-label": label,
    preserveAspectRatio: "xMidYMid meet",
  });
  svg.append(s("title", { text: label }));
  // Axis and three grid lines with their values.
  for (const f of [0, 0.5, 1]) {
    const y = top + plotH - f * plotH;
    svg.append(
      s("line", { x1: left, x2: width - 4, y1: y, y2: y, class: "grid" }),
      s("text", { x: left - 6, y: y + 4, class: "axis", "text-anchor": "end", text: String(Math.round(f * max)) }),
    );
  }
  const every = Math.ceil(n / 8);
  series.forEach((p, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    let y = top + plotH;
    for (const code of codes) {
      const v = (p.by_code && p.by_code[code]) || 0;
      if (v <= 0) {
        continue;
      }
      const hgt = (v / max) * plotH;
      y -= hgt;
      const rect = s("rect", { x, y, width: barW, height: hgt, class: `bar ${codeClass(code)}` });
      rect.append(s("title", { text: `${tick(p.start)}: ${v} ${code}` }));
      svg.append(rect);
    }
    if (i % every === 0) {
      svg.append(s("text", { x: x + barW / 2, y: height - 8, class: "axis", "text-anchor": "middle", text: tick(p.start) }));
    }
  });
  return svg;
}
