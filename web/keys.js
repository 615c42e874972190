// SSH keys: list, add, delete (/api/v1/ssh-keys).

import { del, get, post, seg } from "./api.js";
import { h, keepFocus, replace, timeEl } from "./dom.js";
import { busy, clearError, confirmDialog, showError, showNotice } from "./ui.js";

export function keysPage({ main, alive }) {
  const list = h("div", { id: "keys-list", "data-testid": "keys-list" }, h("p", { class: "muted" }, "Loading…"));
  const input = h("textarea", {
    id: "key-public",
    name: "public_key",
    rows: "3",
    spellcheck: "false",
    autocapitalize: "off",
    "data-testid": "key-input",
    placeholder: "ssh-ed25519 AAAA… you@laptop",
    "aria-describedby": "key-public-hint",
  });
  const submit = h("button", { type: "submit", class: "primary", id: "key-add", "data-testid": "key-add" }, "Add key");
  const form = h(
    "form",
    { class: "card", id: "key-form", "data-testid": "key-form", novalidate: true },
    h("h2", {}, "Add a key"),
    h(
      "div",
      { class: "field" },
      h("label", { for: "key-public" }, "Public key"),
      input,
      h(
        "p",
        { class: "hint", id: "key-public-hint" },
        "One line: ed25519, ECDSA, or RSA of at least 2048 bits, e.g. the contents of ~/.ssh/id_ed25519.pub.",
      ),
    ),
    h("div", { class: "actions" }, submit),
  );

  main.append(
    h("h1", { tabindex: "-1" }, "SSH keys"),
    h(
      "p",
      {},
      "A new hosting gets these keys. A hosting that exists keeps the keys it was created with; add more on the VM in ~/.ssh/authorized_keys.",
    ),
    h("section", { class: "card", "aria-labelledby": "keys-title" }, h("h2", { id: "keys-title" }, "Your keys"), list),
    form,
  );

  async function load() {
    try {
      const keys = await get("/api/v1/ssh-keys");
      if (alive()) keepFocus(list, () => render(keys));
    } catch (e) {
      if (!alive()) return;
      replace(list, h("p", {}, "Your keys could not be loaded."));
      showError(e);
    }
  }

  function render(keys) {
    if (!keys.length) {
      replace(list, h("p", { class: "muted", "data-testid": "keys-empty" }, "No keys yet."));
      return;
    }
    replace(
      list,
      h(
        "ul",
        { class: "items" },
        keys.map((k) =>
          h(
            "li",
            { class: "item", "data-testid": "key-item", dataset: { id: k.id } },
            h(
              "div",
              { class: "item-main" },
              h("strong", {}, k.comment || k.public_key.split(" ")[0]),
              h("code", { class: "wrap small", "data-testid": "key-fingerprint" }, k.fingerprint),
              h("span", { class: "muted small" }, "added ", timeEl(k.created_at)),
            ),
            h(
              "button",
              {
                type: "button",
                class: "danger small",
                "data-testid": "key-delete",
                dataset: { focusKey: `del-${k.id}` },
                "aria-label": `Delete the key ${k.comment || k.fingerprint}`,
                on: {
                  click: async (e) => {
                    const btn = e.currentTarget;
                    const ok = await confirmDialog({
                      title: "Delete this key?",
                      body: h(
                        "p",
                        {},
                        "New hostings will not get it. An existing hosting keeps it: remove it there from ~/.ssh/authorized_keys. ",
                        h("code", { class: "wrap" }, k.fingerprint),
                      ),
                      confirmText: "Delete key",
                      danger: true,
                      testid: "key-delete-dialog",
                    });
                    if (!ok) return;
                    await busy(btn, async () => {
                      await del(`/api/v1/ssh-keys/${seg(k.id)}`);
                      showNotice("The key was deleted.");
                      await load();
                    });
                  },
                },
              },
              "Delete",
            ),
          ),
        ),
      ),
    );
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    clearError();
    const key = input.value.trim();
    if (!key) {
      showError("Paste a public key first.");
      input.focus();
      return;
    }
    busy(submit, async () => {
      await post("/api/v1/ssh-keys", { public_key: key });
      input.value = "";
      showNotice("The key was added.");
      await load();
    });
  });

  load();
}
