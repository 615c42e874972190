// The hosting page's console password form, in the "Power and console" section
// (PUT /api/v1/host/console-password): a new password for logging in on the VM's serial
// console, set inside the running VM by its guest agent; the way back in when SSH is
// broken. Outcomes are said next to the form (`data-testid="console-password-message"`),
// as in the Snapshots and Sleep while idle sections.

import { api } from "./api.js";
import { h } from "./dom.js";
import { busy, loginNameField, sectionMessage } from "./ui.js";

/** The VM runs, or sleeps (the server wakes it first): the guest agent can answer. */
function reachable(hv) {
  return !!hv && (hv.state === "running" || (hv.state === "paused" && !!hv.asleep));
}

/**
 * The form, for the hosting view: `el` to place, `update(hosting)` on every update of the
 * hosting (its `state` and `asleep`; the button is off unless the VM can take it).
 */
export function consolePasswordForm({ alive }) {
  let hosting = null;

  const input = h("input", {
    type: "password",
    id: "console-password-new",
    name: "password",
    "data-testid": "console-password-input",
    autocomplete: "new-password",
    "aria-describedby": "console-password-hint",
  });
  const submit = h(
    "button",
    {
      type: "submit",
      class: "primary",
      id: "console-password-set",
      "data-testid": "console-password-set",
      disabled: true,
    },
    "Set console password",
  );
  const message = h("p", {
    class: "small",
    role: "status",
    "data-testid": "console-password-message",
    hidden: true,
  });
  const { say, hush, failed } = sectionMessage(message, (text, e) => {
    // api.js names the field ("Password: password must be…"): the sentence says it.
    if (e.code === "invalid_field") text = text.replace(/^Password: /, "");
    return text ? text[0].toUpperCase() + text.slice(1) : text;
  });
  const el = h(
    "form",
    {
      class: "console-password-form",
      id: "console-password-form",
      "data-testid": "console-password-form",
      novalidate: true,
    },
    // For password managers: the console password belongs to this login name on the VM.
    loginNameField(),
    h(
      "div",
      { class: "field" },
      h("label", { for: "console-password-new" }, "Console password"),
      h("div", { class: "inline" }, input, submit),
      h(
        "p",
        { class: "hint", id: "console-password-hint", "data-testid": "console-password-hint" },
        "For logging in on the serial console below when SSH does not work. The VM must be running.",
      ),
    ),
    message,
  );




  function sync() {
    submit.disabled = !reachable(hosting) || submit.hasAttribute("aria-busy");
  }

  /** The hosting as the page last got it (GET /api/v1/host or its live events). */
  function update(hv) {
    hosting = hv;
    sync();
  }

  el.addEventListener("submit", (e) => {
    e.preventDefault();
    if (submit.disabled) return;
    hush();
    const password = input.value;
    if (!password) {
      say(false, "Enter the new console password.");
      input.focus();
      return;
    }
    busy(
      submit,
      async () => {
        await api("PUT", "/api/v1/host/console-password", { password });
        if (!alive()) return;
        input.value = "";
        say(true, "Console password set.");
      },
      failed,
    ).then(() => {
      if (alive()) sync();
    });
  });

  return { el, update };
}
