// Custom domains: list, claim (the records to publish), verify, remove
// (/api/v1/host/domains).

import { ApiError, del, get, post, seg } from "./api.js";
import { h, keepFocus, replace, routeLink, timeEl } from "./dom.js";
import { busy, clearError, confirmDialog, copyButton, showError, showNotice } from "./ui.js";

export function domainsPage({ main, alive }) {
  const list = h("div", { id: "domains-list", "data-testid": "domains-list" }, h("p", { class: "muted" }, "Loading…"));
  const input = h("input", {
    id: "domain-name",
    name: "name",
    "data-testid": "domain-input",
    autocomplete: "off",
    autocapitalize: "off",
    spellcheck: "false",
    inputmode: "url",
    placeholder: "shop.example.org",
  });
  const submit = h(
    "button",
    { type: "submit", class: "primary", id: "domain-claim", "data-testid": "domain-claim" },
    "Claim",
  );
  const form = h(
    "form",
    { class: "card", id: "domain-form", "data-testid": "domain-form", novalidate: true },
    h("h2", {}, "Add a domain"),
    h(
      "div",
      { class: "field" },
      h("label", { for: "domain-name" }, "Domain"),
      h("div", { class: "inline" }, input, submit),
    ),
  );
  // Messages of the last verification per domain, kept across re-renders.
  const messages = new Map();

  main.append(
    h("h1", { tabindex: "-1" }, "Domains"),
    h(
      "p",
      {},
      "Serve your site on your own domain: claim it, publish the two DNS records shown, then verify.",
    ),
    h("section", { class: "card", "aria-labelledby": "domains-title" }, h("h2", { id: "domains-title" }, "Your domains"), list),
    form,
  );

  async function load() {
    try {
      const ds = await get("/api/v1/host/domains");
      if (alive()) keepFocus(list, () => render(ds));
    } catch (e) {
      if (!alive()) return;
      if (e instanceof ApiError && e.status === 404) {
        form.hidden = true;
        replace(
          list,
          h("p", { "data-testid": "domains-no-hosting" }, "Domains point to your hosting, and you have none yet. ", routeLink("/", "Create your hosting"), " first."),
        );
        return;
      }
      replace(list, h("p", {}, "Your domains could not be loaded."));
      showError(e);
    }
  }

  function record(label, value, testid) {
    const code = h("code", { class: "wrap", "data-testid": testid }, value);
    return [h("dt", {}, label), h("dd", {}, h("div", { class: "command" }, code, copyButton(code, "Copy", { "aria-label": `Copy ${label}` })))];
  }

  function render(ds) {
    form.hidden = false;
    if (!ds.length) {
      replace(list, h("p", { class: "muted", "data-testid": "domains-empty" }, "No domains yet."));
      return;
    }
    replace(
      list,
      h(
        "ul",
        { class: "items" },
        ds.map((d) => {
          const msg = messages.get(d.name);
          const verifyBtn = h(
            "button",
            {
              type: "button",
              class: d.state === "verified" ? "secondary small" : "primary small",
              "data-testid": "domain-verify",
              dataset: { focusKey: `verify-${d.name}` },
              "aria-label": `Verify ${d.name}`,
              on: { click: (e) => verify(e.currentTarget, d.name) },
            },
            d.state === "verified" ? "Check again" : "Verify",
          );
          const removeBtn = h(
            "button",
            {
              type: "button",
              class: "danger small",
              "data-testid": "domain-remove",
              dataset: { focusKey: `remove-${d.name}` },
              "aria-label": `Remove ${d.name}`,
              on: { click: (e) => remove(e.currentTarget, d.name) },
            },
            "Remove",
          );
          return h(
            "li",
            { class: "item domain", "data-testid": "domain-item", dataset: { name: d.name } },
            h(
              "div",
              { class: "item-main" },
              h(
                "div",
                { class: "card-head" },
                h("strong", { class: "wrap", "data-testid": "domain-name" }, d.name),
                h("span", { class: `badge state-${d.state}`, "data-testid": "domain-state" }, d.state),
              ),
              d.state === "verified"
                ? h("p", { class: "muted small" }, "Routed to your site since ", timeEl(d.verified_at), ".")
                : h(
                    "div",
                    {},
                    h("p", { class: "small" }, "Create these DNS records at your DNS provider, then verify:"),
                    h(
                      "dl",
                      { class: "records" },
                      record("TXT record name", d.txt_name, "domain-txt-name"),
                      record("TXT record value", d.txt_value, "domain-txt-value"),
                      record(`CNAME of ${d.name} (or the same A record as)`, d.target, "domain-target"),
                    ),
                  ),
              d.reason && h("p", { class: "reason small" }, `Last check: ${d.reason}`),
              msg && h("p", { class: `small ${msg.ok ? "ok" : "reason"}`, role: "status", "data-testid": "domain-message" }, msg.text),
            ),
            h("div", { class: "actions left" }, verifyBtn, removeBtn),
          );
        }),
      ),
    );
  }

  async function verify(btn, name) {
    clearError();
    await busy(btn, async () => {
      try {
        await post(`/api/v1/host/domains/${seg(name)}/verify`);
        messages.set(name, { ok: true, text: "Verified: the domain now leads to your site." });
      } catch (e) {
        if (e instanceof ApiError && e.status === 422) {
          messages.set(name, {
            ok: false,
            text: `Not verified yet: ${e.message} DNS changes can take a few minutes to be seen; try again then.`,
          });
        } else throw e;
      }
      await load();
    });
  }

  async function remove(btn, name) {
    const ok = await confirmDialog({
      title: `Remove ${name}?`,
      body: h("p", {}, "It will no longer lead to your site, and its certificate is no longer renewed."),
      confirmText: "Remove",
      danger: true,
      testid: "domain-remove-dialog",
    });
    if (!ok) return;
    await busy(btn, async () => {
      await del(`/api/v1/host/domains/${seg(name)}`);
      messages.delete(name);
      showNotice(`${name} was removed.`);
      await load();
    });
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    clearError();
    const name = input.value.trim();
    if (!name) {
      showError("Enter a domain name, such as shop.example.org.");
      input.focus();
      return;
    }
    busy(submit, async () => {
      const d = await post("/api/v1/host/domains", { name });
      input.value = "";
      showNotice(`${d.name} is claimed. Publish its DNS records, then verify.`);
      await load();
    });
  });

  load();
}
