// The account: change the password (POST /api/v1/auth/password), or delete the account
// (DELETE /api/v1/auth/me). A password change ends every session of the account, this one
// too, so the page sends the user to log in again.

import { api, post, session, setSession } from "./api.js";
import { field } from "./auth.js";
import { h } from "./dom.js";
import { navigate, pending } from "./router.js";
import { busy, clearError, confirmDialog, showError } from "./ui.js";

export function accountPage({ main }) {
  const input = (id, autocomplete) =>
    h("input", { id, name: id, type: "password", autocomplete, required: true, "data-testid": id });
  const current = input("current-password", "current-password");
  const fresh = input("new-password", "new-password");
  const again = input("new-password-again", "new-password");
  const submit = h(
    "button",
    { type: "submit", class: "primary", id: "password-submit", "data-testid": "password-submit" },
    "Change password",
  );
  const form = h(
    "form",
    { class: "card narrow", id: "password-form", "data-testid": "password-form", novalidate: true },
    h("h2", {}, "Change your password"),
    field("current-password", "Current password", current),
    field("new-password", "New password", fresh, "At least 8 characters."),
    field("new-password-again", "New password, again", again),
    h(
      "p",
      { class: "hint" },
      "Every session and token of your account ends, on every device: you log in again with the new password.",
    ),
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    clearError();
    if (!current.value || !fresh.value) {
      showError("Enter your current password and a new one.");
      (current.value ? fresh : current).focus();
      return;
    }
    if (fresh.value !== again.value) {
      showError("The two new passwords differ.");
      again.focus();
      return;
    }
    busy(submit, async () => {
      await post("/api/v1/auth/password", {
        current_password: current.value,
        new_password: fresh.value,
      });
      setSession(null);
      pending.notice = "Your password was changed. Log in with the new one.";
      navigate("/login", { replace: true });
    });
  });
  const username = session.user.username;
  const deletePassword = input("delete-password", "current-password");
  const deleteButton = h(
    "button",
    { type: "submit", class: "danger", id: "account-delete", "data-testid": "account-delete" },
    "Delete my account…",
  );
  const deleteForm = h(
    "form",
    { class: "card narrow danger-zone", id: "account-delete-form", "data-testid": "account-delete-form", novalidate: true },
    h("h2", {}, "Delete your account"),
    h(
      "p",
      {},
      "Your SSH keys and sessions go with it, and your username can be taken again. Delete your hosting first: an account with a hosting cannot be deleted.",
    ),
    field("delete-password", "Password", deletePassword),
    h("div", { class: "actions" }, deleteButton),
  );
  deleteForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearError();
    if (!deletePassword.value) {
      showError("Enter your password to delete your account.");
      deletePassword.focus();
      return;
    }
    const ok = await confirmDialog({
      title: "Delete your account?",
      body: h("p", {}, "This cannot be undone."),
      confirmText: "Delete my account",
      danger: true,
      requireText: username,
      testid: "account-delete-dialog",
    });
    if (!ok) return;
    busy(deleteButton, async () => {
      await api("DELETE", "/api/v1/auth/me", { password: deletePassword.value });
      setSession(null);
      pending.notice = `The account ${username} was deleted.`;
      navigate("/login", { replace: true });
    });
  });
  main.append(
    h("h1", { tabindex: "-1" }, "Account"),
    h("p", {}, "Signed in as ", h("strong", { "data-testid": "account-username" }, username), "."),
    form,
    deleteForm,
  );
}
