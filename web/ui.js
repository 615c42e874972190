// Shared pieces of the interface: the error and notice banners, a section's own message
// line, copy buttons, confirmation dialogs, busy buttons.

import { ApiError, session } from "./api.js";
import { h } from "./dom.js";

const $ = (id) => document.getElementById(id);

/** Shows a sentence in the error banner (`data-testid="error"`). */
export function showError(errOrText) {
  const text =
    typeof errOrText === "string"
      ? errOrText
      : (errOrText && errOrText.message) || "Something went wrong.";
  // A 401 already sent the user to the login page, which says why.
  if (errOrText && errOrText.handled) return;
  if (errOrText && typeof errOrText === "object" && errOrText.name !== "ApiError") {
    // A bug of ours, not an answer of the server: keep the details for the console.
    console.error(errOrText);
  }
  $("error").textContent = text;
  $("error-banner").hidden = false;
}

export function clearError() {
  $("error-banner").hidden = true;
  $("error").textContent = "";
}

/** Shows a sentence in the notice banner (`data-testid="notice"`). */
export function showNotice(text) {
  $("notice").textContent = text;
  $("notice-banner").hidden = false;
}

export function hideNotice() {
  $("notice-banner").hidden = true;
  $("notice").textContent = "";
}

export function clearBanners() {
  clearError();
  hideNotice();
}

export function initBanners() {
  $("error-dismiss").addEventListener("click", clearError);
  $("notice-dismiss").addEventListener("click", hideNotice);
}

/**
 * Runs `fn` with `button` disabled and marked busy; errors go to the error banner unless
 * `onError` takes them. Returns fn's result, or undefined when it threw.
 */
export async function busy(button, fn, onError = showError) {
  const wasDisabled = button ? button.disabled : false;
  if (button) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
  }
  try {
    return await fn();
  } catch (e) {
    if (onError) onError(e);
    return undefined;
  } finally {
    if (button && button.isConnected) {
      button.disabled = wasDisabled;
      button.removeAttribute("aria-busy");
    }
  }
}

/**
 * A "Copy" button for the text of `source` (an element) with a polite confirmation.
 * navigator.clipboard needs a secure context; elsewhere the text is selected and the
 * older copy command tried, else the user is asked to press Ctrl+C.
 */
export function copyButton(source, label = "Copy", attrs = {}) {
  const status = h("span", { class: "copy-status", role: "status" });
  const btn = h(
    "button",
    {
      type: "button",
      class: "secondary small",
      ...attrs,
      on: {
        click: async () => {
          const text = source.value !== undefined ? source.value : source.textContent;
          status.textContent = (await copyText(text, source))
            ? "Copied."
            : "Selected: press Ctrl+C (⌘C) to copy.";
          setTimeout(() => {
            if (status.isConnected) status.textContent = "";
          }, 4000);
        },
      },
    },
    label,
  );
  return h("span", { class: "copy" }, btn, status);
}

export async function copyText(text, source) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      // A browser may hold the promise while it asks for permission: do not wait long.
      const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), 1500));
      await Promise.race([navigator.clipboard.writeText(text), timeout]);
      return true;
    }
  } catch {
    // fall through to selecting the text
  }
  selectText(source);
  try {
    return document.execCommand("copy");
  } catch {
    return false;
  }
}

function selectText(el) {
  if (!el) return;
  if (typeof el.select === "function") {
    el.focus();
    el.select();
    return;
  }
  const range = document.createRange();
  range.selectNodeContents(el);
  const sel = window.getSelection();
  sel.removeAllRanges();
  sel.addRange(range);
}

/**
 * A modal <dialog> asking to confirm. `requireText`: the confirm button stays disabled
 * until this exact text is typed. Resolves true (confirmed) or false. Focus is trapped by
 * the modal dialog and returned to where it was.
 */
export function confirmDialog({
  title,
  body,
  confirmText = "Confirm",
  danger = false,
  requireText = null,
  testid = "confirm-dialog",
}) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const titleId = `dlg-title-${Math.random().toString(36).slice(2)}`;
    const confirm = h(
      "button",
      {
        type: "submit",
        class: danger ? "danger" : "primary",
        "data-testid": `${testid}-confirm`,
        disabled: !!requireText,
      },
      confirmText,
    );
    const cancel = h(
      "button",
      { type: "button", class: "secondary", "data-testid": `${testid}-cancel` },
      "Cancel",
    );
    let input = null;
    if (requireText) {
      input = h("input", {
        type: "text",
        id: `${titleId}-input`,
        autocomplete: "off",
        autocapitalize: "off",
        spellcheck: "false",
        "data-testid": `${testid}-input`,
        on: {
          input: () => {
            confirm.disabled = input.value.trim() !== requireText;
          },
        },
      });
    }
    const form = h(
      "form",
      { method: "dialog" },
      h("h2", { id: titleId }, title),
      body,
      requireText &&
        h(
          "div",
          { class: "field" },
          h("label", { for: input.id }, "Type ", h("strong", {}, requireText), " to confirm"),
          input,
        ),
      h("div", { class: "actions" }, cancel, confirm),
    );
    const dialog = h("dialog", { "aria-labelledby": titleId, "data-testid": testid }, form);
    let result = false;
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (confirm.disabled) return;
      result = true;
      dialog.close();
    });
    cancel.addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      dialog.remove();
      if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
      resolve(result);
    });
    document.body.append(dialog);
    dialog.showModal();
    (input || cancel).focus();
  });
}

/**
 * A section's own message line `message` (a hidden `<p>`): `say(ok, text)` shows a result
 * (green when ok), `hush()` hides it, and `failed(e)` shows an API refusal there, as
 * `reword(sentence, error)` makes it read, and anything else in the error banner (a 401 is
 * the router's business).
 */
export function sectionMessage(message, reword = (text) => text) {
  function say(ok, text) {
    message.textContent = text;
    message.className = `small ${ok ? "ok" : "reason"}`;
    message.setAttribute("role", ok ? "status" : "alert");
    message.hidden = false;
  }
  function hush() {
    message.hidden = true;
    message.textContent = "";
  }
  function failed(e) {
    if (e && e.handled) return;
    if (!(e instanceof ApiError)) {
      showError(e);
      return;
    }
    say(false, reword(e.message, e));
  }
  return { say, hush, failed };
}

/** A hidden, read-only field with the user's login name, so that password managers file a
 * console password under it. */
export function loginNameField() {
  return h("input", {
    type: "text",
    name: "username",
    autocomplete: "username",
    value: session.user ? session.user.username : "",
    readonly: true,
    hidden: true,
    tabindex: "-1",
    "aria-hidden": "true",
  });
}
