// The dashboard's entry point: the session, the header, and which page a path shows.

import { adminPage } from "./admin.js";
import { del, get, isAdmin, session, setSession, setUnauthorizedHandler } from "./api.js";
import { loginPage, signupPage } from "./auth.js";
import { consolePage } from "./console.js";
import { domainsPage } from "./domains.js";
import { h, replace, routeLink } from "./dom.js";
import { hostingPage } from "./hosting.js";
import { keysPage } from "./keys.js";
import { accountPage } from "./account.js";
import { interceptLinks, navigate, pending, rerender, setRenderer } from "./router.js";
import { busy, clearBanners, initBanners, showError, showNotice } from "./ui.js";

// `auth`: needs a session; `guest`: only without one; `admin`: needs the admin role.
const ROUTES = [
  { re: /^\/$/, title: "My hosting", nav: "/", page: hostingPage, auth: true },
  { re: /^\/login\/?$/, title: "Log in", nav: "/login", page: loginPage, guest: true },
  { re: /^\/signup\/?$/, title: "Sign up", nav: "/signup", page: signupPage, guest: true },
  { re: /^\/keys\/?$/, title: "SSH keys", nav: "/keys", page: keysPage, auth: true },
  { re: /^\/domains\/?$/, title: "Domains", nav: "/domains", page: domainsPage, auth: true },
  { re: /^\/console\/?$/, title: "Console", nav: "/console", page: consolePage, auth: true },
  { re: /^\/account\/?$/, title: "Account", nav: "/account", page: accountPage, auth: true },
  { re: /^\/admin\/?$/, title: "Administration", nav: "/admin", page: adminPage, auth: true, admin: true },
  {
    re: /^\/admin\/console\/([^/]+)\/?$/,
    title: "VM console",
    nav: "/admin",
    page: consolePage,
    auth: true,
    admin: true,
  },
];

let cleanup = null;
let generation = 0;
let bootError = null;

function renderHeader(route) {
  const nav = document.getElementById("nav");
  const user = document.getElementById("user");
  const link = (href, text, testid) =>
    routeLink(href, text, {
      "data-testid": testid,
      "aria-current": route && route.nav === href ? "page" : undefined,
    });
  if (session.user) {
    replace(
      nav,
      h(
        "ul",
        {},
        h("li", {}, link("/", "My hosting", "nav-hosting")),
        h("li", {}, link("/keys", "SSH keys", "nav-keys")),
        h("li", {}, link("/domains", "Domains", "nav-domains")),
        h("li", {}, link("/console", "Console", "nav-console")),
        h("li", {}, link("/account", "Account", "nav-account")),
        isAdmin() && h("li", {}, link("/admin", "Admin", "nav-admin")),
      ),
    );
    replace(
      user,
      h("span", { class: "whoami", "data-testid": "whoami" }, session.user.username),
      h(
        "button",
        { type: "button", class: "secondary small", id: "logout", "data-testid": "logout", on: { click: logout } },
        "Log out",
      ),
    );
  } else {
    replace(
      nav,
      h("ul", {}, h("li", {}, link("/login", "Log in", "nav-login")), h("li", {}, link("/signup", "Sign up", "nav-signup"))),
    );
    replace(user);
  }
}

async function logout(e) {
  await busy(e.currentTarget, async () => {
    try {
      await del("/api/v1/session", { expect401: true });
    } catch (err) {
      if (err.status !== 401) throw err; // already logged out is fine
    }
    setSession(null);
    pending.notice = "You are logged out.";
    navigate("/login", { replace: true });
  });
}

function render({ focus = false } = {}) {
  generation += 1;
  const mine = generation;
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.error(err);
    }
    cleanup = null;
  }
  clearBanners();
  const main = document.getElementById("main");
  main.className = "";
  main.replaceChildren();

  if (bootError) {
    renderHeader(null);
    document.title = "roost";
    main.append(
      h("h1", { tabindex: "-1" }, "The dashboard could not start"),
      h("p", {}, `Your session could not be checked: ${bootError.message}`),
      h("button", { type: "button", class: "primary", on: { click: () => boot() } }, "Try again"),
    );
    return;
  }

  const path = location.pathname;
  let params = [];
  const route = ROUTES.find((r) => {
    const m = r.re.exec(path);
    if (m) params = m.slice(1);
    return !!m;
  });

  if (route && route.auth && !session.user) {
    pending.returnTo = path;
    navigate("/login", { replace: true });
    return;
  }
  if (route && route.guest && session.user) {
    navigate("/", { replace: true });
    return;
  }

  renderHeader(route);
  if (pending.notice) {
    showNotice(pending.notice);
    pending.notice = null;
  }

  if (!route) {
    document.title = "Not found · roost";
    main.append(h("h1", { tabindex: "-1" }, "Page not found"), h("p", {}, "There is no such page. ", routeLink("/", "Go to the start page"), "."));
  } else if (route.admin && !isAdmin()) {
    document.title = "Not allowed · roost";
    main.append(
      h("h1", { tabindex: "-1" }, "Administrators only"),
      h("p", {}, "This page is for administrators. ", routeLink("/", "Go to your hosting"), "."),
    );
  } else {
    document.title = `${route.title} · roost`;
    const alive = () => mine === generation;
    try {
      cleanup = route.page({ main, params, alive }) || null;
    } catch (err) {
      showError(err);
    }
  }
  if (focus) {
    const h1 = main.querySelector("h1");
    if (h1) {
      if (!h1.hasAttribute("tabindex")) h1.setAttribute("tabindex", "-1");
      h1.focus();
    }
  }
}

setUnauthorizedHandler(() => {
  if (!session.user) return;
  setSession(null);
  pending.notice = "Your session has ended. Log in again.";
  pending.returnTo = location.pathname;
  navigate("/login", { replace: true });
});

async function boot() {
  bootError = null;
  try {
    setSession(await get("/api/v1/session", { expect401: true }));
  } catch (err) {
    setSession(null);
    if (err.status !== 401) bootError = err;
  }
  rerender({ focus: false });
}

initBanners();
interceptLinks();
setRenderer(render);
boot();
