// The signing keys of access tokens (GET /v1/keys) and their rotation.

import * as api from "../api.js";
import { h, table, badge, time, button, confirmThen, announce, errorBox } from "../dom.js";

/** `#/keys`. */
export async function render(main) {
  main.replaceChildren(h("h1", { tabindex: "-1", text: "Signing keys" }));
  const box = h("div", {});

  async function load() {
    try {
      const page = await api.get("/v1/keys");
      const keys = page.items || [];
      box.replaceChildren(
        table(
          "Signing keys of access tokens",
          [
            { label: "Key id", cell: (k) => h("code", { text: k.kid }) },
            { label: "Algorithm", cell: (k) => k.alg },
            { label: "State", cell: (k) => badge(k.state) },
            { label: "Created", cell: (k) => time(k.created_at) },
            { label: "Verifies until", cell: (k) => time(k.verify_until) },
            { label: "Retired", cell: (k) => time(k.retired_at) },
          ],
          keys,
        ),
      );
    } catch (err) {
      box.replaceChildren(errorBox(err, "Loading the keys"));
    }
  }

  const rotate = () =>
    confirmThen(
      {
        title: "Rotate the signing key?",
        message: "A new key signs access tokens from now on; the current one keeps verifying until the longest access-token lifetime has passed, then retires.",
        confirmLabel: "Rotate key",
      },
      "Rotating the key",
      async () => {
        await api.call("POST", "/v1/keys/rotate");
        announce("Signing key rotated.", "success");
        await load();
      },
    );

  main.append(
    h("p", { text: "Private key material never leaves the server: this page shows ids, algorithms, states and dates." }),
    box,
    h("div", { class: "actions" }, button("Rotate signing key", rotate, { class: "danger" })),
  );
  await load();
}
