// Log in and sign up. Both end with POST /api/v1/session, which sets the session cookie
// and answers the user and the CSRF token.

import { post, setSession } from "./api.js";
import { h, routeLink } from "./dom.js";
import { navigate, pending } from "./router.js";
import { busy, clearError, showError } from "./ui.js";

export function field(id, label, input, hint) {
  const hintId = hint ? `${id}-hint` : undefined;
  if (hintId) input.setAttribute("aria-describedby", hintId);
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    hint && h("p", { class: "hint", id: hintId }, hint),
  );
}

async function logIn(username, password) {
  const body = await post("/api/v1/session", { username, password }, { expect401: true });
  setSession(body);
  const to = pending.returnTo && pending.returnTo !== "/login" ? pending.returnTo : "/";
  pending.returnTo = null;
  navigate(to, { replace: true });
}

export function loginPage({ main }) {
  const username = h("input", {
    id: "login-username",
    name: "username",
    "data-testid": "login-username",
    autocomplete: "username",
    autocapitalize: "off",
    spellcheck: "false",
    required: true,
  });
  const password = h("input", {
    id: "login-password",
    name: "password",
    type: "password",
    "data-testid": "login-password",
    autocomplete: "current-password",
    required: true,
  });
  const submit = h(
    "button",
    { type: "submit", class: "primary", id: "login-submit", "data-testid": "login-submit" },
    "Log in",
  );
  const form = h(
    "form",
    { id: "login-form", class: "card narrow", "data-testid": "login-form", novalidate: true },
    field("login-username", "Username", username),
    field("login-password", "Password", password),
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!username.value.trim() || !password.value) {
      showError("Enter your username and password.");
      (username.value.trim() ? password : username).focus();
      return;
    }
    clearError();
    busy(submit, () => logIn(username.value.trim(), password.value));
  });
  main.append(
    h("h1", {}, "Log in"),
    form,
    h("p", { class: "center" }, "No account yet? ", routeLink("/signup", "Sign up", { "data-testid": "signup-link" })),
  );
}

export function signupPage({ main }) {
  const username = h("input", {
    id: "signup-username",
    name: "username",
    "data-testid": "signup-username",
    autocomplete: "username",
    autocapitalize: "off",
    spellcheck: "false",
    required: true,
    minlength: 3,
    maxlength: 32,
    pattern: "[a-z][a-z0-9-]*[a-z0-9]",
  });
  const email = h("input", {
    id: "signup-email",
    name: "email",
    type: "email",
    "data-testid": "signup-email",
    autocomplete: "email",
  });
  const password = h("input", {
    id: "signup-password",
    name: "password",
    type: "password",
    "data-testid": "signup-password",
    autocomplete: "new-password",
    required: true,
    minlength: 8,
  });
  const submit = h(
    "button",
    { type: "submit", class: "primary", id: "signup-submit", "data-testid": "signup-submit" },
    "Create account",
  );
  const form = h(
    "form",
    { id: "signup-form", class: "card narrow", "data-testid": "signup-form", novalidate: true },
    field(
      "signup-username",
      "Username",
      username,
      "3 to 32 lowercase letters, digits or '-', starting with a letter. It is your site's address and your login name on your VM.",
    ),
    field("signup-email", "Email (optional)", email),
    field("signup-password", "Password", password, "At least 8 characters."),
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const u = username.value.trim();
    if (!u || !password.value) {
      showError("Choose a username and a password.");
      (u ? password : username).focus();
      return;
    }
    clearError();
    busy(submit, async () => {
      const body = { username: u, password: password.value };
      if (email.value.trim()) body.email = email.value.trim();
      await post("/api/v1/auth/register", body);
      try {
        await logIn(u, password.value);
      } catch (err) {
        // The account exists; only the automatic login failed (e.g. rate limited).
        pending.notice = `Your account ${u} was created. Log in to continue.`;
        navigate("/login", { replace: true });
        showError(err);
      }
    });
  });
  main.append(
    h("h1", {}, "Sign up"),
    form,
    h("p", { class: "center" }, "Have an account? ", routeLink("/login", "Log in", { "data-testid": "login-link" })),
  );
}
