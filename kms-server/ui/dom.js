// Building the page: elements are made with createElement and filled with textContent
// only, so nothing the server sends can ever become markup.

let nextId = 0;

/** A fresh element id with `prefix`. */
export function uid(prefix = "f") {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/**
 * `h("button", {class: "x", type: "button", on: {click}}, "Label", child, ...)`.
 * Props: `class`, `text`, `on` (event handlers), boolean and string attributes; children
 * are nodes, strings (as text), arrays of them, or null/false (skipped).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element, with attributes as for `h`. */
export function s(tag, props = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setProps(el, props);
  append(el, children);
  return el;
}

function setProps(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (key === "on") {
      for (const [event, handler] of Object.entries(value)) {
        el.addEventListener(event, handler);
      }
    } else if (key === "text") {
      el.textContent = String(value);
    } else if (key === "value" && "value" in el && !(el instanceof SVGElement)) {
      el.value = String(value);
    } else if (key === "checked" || key === "selected") {
      el[key] = Boolean(value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el` with `children` (as for `h`: null and false skipped). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Shows `message` in the live status region (read out by screen readers). */
export function announce(message, kind = "info") {
  const region = document.getElementById("status");
  if (!region) {
    return;
  }
  region.className = `status status-${kind}`;
  region.textContent = message;
}

let pending = null;

/** Shows `message` once the next navigation has happened. */
export function announceNext(message, kind = "info") {
  pending = { message, kind };
}

/** On navigation: shows what was announced for it, else clears the status region. */
export function settle() {
  if (pending) {
    announce(pending.message, pending.kind);
    pending = null;
  } else {
    quiet();
  }
}

/** Clears the status region. */
export function quiet() {
  const region = document.getElementById("status");
  if (region) {
    region.className = "status";
    region.textContent = "";
  }
}

/** An error box showing the API's own message (and its code and request id). */
export function errorBox(err, prefix = "") {
  const code = err && err.code ? err.code : "";
  const requestId = err && err.requestId ? err.requestId : "";
  const message = err && err.message ? err.message : String(err);
  return h(
    "div",
    { class: "error", role: "alert" },
    h("p", {}, h("strong", { text: prefix ? `${prefix}: ` : "Error: " }), message),
    code || requestId
      ? h(
          "p",
          { class: "meta" },
          code ? `code ${code}` : "",
          code && requestId ? " · " : "",
          requestId ? `request ${requestId}` : "",
        )
      : null,
  );
}

/** Announces `err` as a failure of `what` (the API's message). */
export function announceError(what, err) {
  const message = err && err.message ? err.message : String(err);
  announce(`${what} failed: ${message}`, "error");
}

/**
 * Asks `dialog` (the options of confirmDialog; `null` to skip asking) and, once
 * confirmed, runs `action`; a failure is announced as a failure of `what`.
 */
export async function confirmThen(dialog, what, action) {
  if (dialog && !(await confirmDialog(dialog))) {
    return;
  }
  try {
    await action();
  } catch (err) {
    announceError(what, err);
  }
}

/**
 * A form's submit handler: clears `out`, runs `action`, and shows a failure in `out`
 * as an error box headed `failure`.
 */
export function onSubmit(out, failure, action) {
  return async (e) => {
    e.preventDefault();
    out.replaceChildren();
    try {
      await action();
    } catch (err) {
      out.replaceChildren(errorBox(err, failure));
    }
  };
}

/** A labelled form field: `<div class="field"><label for=id>label</label>input hint</div>`. */
export function field(label, input, hint) {
  if (!input.id) {
    input.id = uid("field");
  }
  let hintEl = null;
  if (hint) {
    hintEl = h("p", { class: "hint", id: uid("hint"), text: hint });
    input.setAttribute("aria-describedby", hintEl.id);
  }
  return h("div", { class: "field" }, h("label", { for: input.id, text: label }), input, hintEl);
}

/** A checkbox with its label after it. */
export function checkbox(label, props = {}) {
  const input = h("input", { type: "checkbox", id: uid("cb"), ...props });
  return h("div", { class: "check" }, input, h("label", { for: input.id, text: label }));
}

/**
 * A table: `columns` is `[{label, cell: row => node|string}]`; `caption` names it.
 */
export function table(caption, columns, rows) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", { text: caption }),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", text: c.label })))),
      h(
        "tbody",
        {},
        rows.length === 0
          ? h("tr", {}, h("td", { colspan: columns.length, class: "empty", text: "Nothing here yet." }))
          : rows.map((row) => h("tr", {}, columns.map((c) => h("td", { "data-label": c.label }, c.cell(row))))),
      ),
    ),
  );
}

/** A short, readable form of an RFC 3339 time (UTC), or "—". */
export function when(iso) {
  if (!iso) {
    return "—";
  }
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) {
    return String(iso);
  }
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/:\d\dZ$/, "Z");
}

/** A `<time>` element for `iso`. */
export function time(iso) {
  return iso ? h("time", { datetime: iso, text: when(iso) }) : "—";
}

/** A status badge ("active", "revoked", "pass", "fail", ...). */
export function badge(text) {
  return h("span", { class: `badge badge-${String(text).replace(/[^a-z_]/g, "")}`, text });
}

/** A list of short strings as `<code>` chips, or "—". */
export function chips(values) {
  if (!values || values.length === 0) {
    return "—";
  }
  return h("ul", { class: "chips" }, values.map((v) => h("li", {}, h("code", { text: v }))));
}

/** A `<button type="button">`. */
export function button(label, onClick, props = {}) {
  return h("button", { type: "button", ...props, on: { click: onClick } }, label);
}

/**
 * Asks to confirm a destructive action in a modal `<dialog>`; resolves to true only when
 * the confirm button was pressed. Focus starts on Cancel and returns where it was.
 */
export function confirmDialog({ title, message, confirmLabel = "Confirm" }) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const titleId = uid("dlg-title");
    const descId = uid("dlg-desc");
    const cancel = h("button", { type: "button", class: "secondary", text: "Cancel" });
    const ok = h("button", { type: "button", class: "danger", text: confirmLabel });
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": titleId, "aria-describedby": descId },
      h("h2", { id: titleId, text: title }),
      h("p", { id: descId, text: message }),
      h("div", { class: "actions" }, cancel, ok),
    );
    let answered = false;
    const finish = (answer) => {
      if (answered) {
        return;
      }
      answered = true;
      if (dialog.open) {
        dialog.close();
      }
      dialog.remove();
      if (opener && typeof opener.focus === "function" && opener.isConnected) {
        opener.focus();
      }
      resolve(answer);
    };
    cancel.addEventListener("click", () => finish(false));
    ok.addEventListener("click", () => finish(true));
    dialog.addEventListener("cancel", (e) => {
      e.preventDefault();
      finish(false);
    });
    dialog.addEventListener("close", () => finish(false));
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/**
 * A paginated list driven by the API's cursor: `load(cursor)` resolves to
 * `{items, next_cursor}`, `render(items)` builds the node shown. Offers "Next page" while
 * there is a `next_cursor`, and "Previous page" back through the cursors seen.
 */
export function pagedList({ load, render, label }) {
  const wrap = h("section", { class: "paged", "aria-label": label });
  const body = h("div", { class: "paged-body" });
  const info = h("p", { class: "meta", "aria-live": "polite" });
  const prev = button("Previous page", () => show(history.length - 2), { class: "secondary" });
  const next = button("Next page", () => show(history.length), { class: "secondary" });
  const nav = h("nav", { class: "pager", "aria-label": `${label}: pages` }, prev, info, next);
  wrap.append(body, nav);
  // history[i] is the cursor of page i (null for the first page).
  const history = [null];
  let nextCursor = null;

  async function show(index) {
    if (index < 0) {
      return;
    }
    const cursor = index < history.length ? history[index] : nextCursor;
    // While a page loads, a second click cannot move (and push the same cursor twice).
    prev.disabled = true;
    next.disabled = true;
    try {
      const page = await load(cursor);
      if (index >= history.length) {
        history.push(cursor);
      } else {
        history.length = index + 1;
      }
      nextCursor = page.next_cursor || null;
      body.replaceChildren(render(page.items || []));
      info.textContent = `Page ${history.length}`;
    } catch (err) {
      body.replaceChildren(errorBox(err, `Loading ${label.toLowerCase()}`));
    } finally {
      prev.disabled = history.length <= 1;
      next.disabled = !nextCursor;
    }
  }

  wrap.reload = () => show(history.length - 1);
  show(0);
  return wrap;
}

/** A readonly secret shown once, with a copy button and a warning. */
export function secretPanel(title, secret, detail) {
  const input = h("input", {
    type: "text",
    readonly: true,
    value: secret,
    class: "secret",
    spellcheck: "false",
    autocomplete: "off",
    id: uid("secret"),
  });
  const copied = h("span", { class: "meta", "aria-live": "polite" });
  const copy = button("Copy", async () => {
    try {
      await navigator.clipboard.writeText(input.value);
      copied.textContent = "Copied to the clipboard.";
    } catch {
      input.select();
      copied.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
    }
  });
  return h(
    "section",
    { class: "once", "aria-labelledby": `${input.id}-title` },
    h("h2", { id: `${input.id}-title`, text: title }),
    h(
      "p",
      { class: "warning" },
      h("strong", { text: "Shown this once. " }),
      "Copy it now and keep it somewhere safe: kms stores only a hash, so it cannot show it again.",
    ),
    detail ? h("p", { text: detail }) : null,
    h("div", { class: "secret-row" }, h("label", { for: input.id, class: "visually-hidden", text: title }), input, copy),
    copied,
  );
}

/** `<dl>` of `[term, value]` pairs. */
export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.filter(Boolean).map(([term, value]) => [h("dt", { text: term }), h("dd", {}, value)]),
  );
}

/** Reads the value of a form control by name, trimmed. */
export function val(form, name) {
  const el = form.elements.namedItem(name);
  return el && typeof el.value === "string" ? el.value.trim() : "";
}

/** Splits "a, b c" into ["a", "b", "c"]. */
export function words(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

/** The values of the checked checkboxes named `name` in `form`. */
export function checked(form, name) {
  return Array.from(form.querySelectorAll(`input[type=checkbox][name="${name}"]`))
    .filter((el) => el.checked)
    .map((el) => el.value);
}
