// "My hosting": the create form, or the hosting's live state, its site links and SSH
// command, power buttons and the console password (console-password.js), sleeping while idle
// (sleep.js), disk snapshots (snapshots.js) and deletion. The state follows
// GET /api/v1/host/events (SSE).

import { ApiError, del, get, post, seg, session } from "./api.js";
import { consolePasswordForm } from "./console-password.js";
import { h, replace, routeLink, timeEl } from "./dom.js";
import { sleepSection } from "./sleep.js";
import { snapshotsSection } from "./snapshots.js";
import { busy, clearError, confirmDialog, copyButton, loginNameField, showError, showNotice } from "./ui.js";

// A generated private key, kept in memory (never stored) until the user says it is saved,
// so that moving between pages does not lose it. A page reload does.
let generatedKey = null; // { username, filename, text, url }

const PROGRESS = {
  provisioning: "Creating your VM: its disk, network and first-boot configuration.",
  booting:
    "Booting: waiting for the web server (port 80) and SSH (port 22) to answer. The first boot takes a minute or two.",
  running: "Running: your site and SSH are up.",
  paused: "Paused by an administrator.",
  asleep: "Asleep: nobody visited for a while. The next visit or SSH connection wakes it.",
  stopped: "Stopped. Start it to bring your site and SSH back.",
  failed: "Failed.",
  deleting: "Being deleted.",
};

const STEPS = [
  ["provisioning", "Create the VM"],
  ["booting", "Boot"],
  ["running", "Web server and SSH answer"],
];

// Which owner actions each state allows (the server's lifecycle::plan decides; this only
// greys out buttons that would be refused or do nothing).
const ACTIONS = {
  start: ["stopped", "failed"],
  stop: ["running", "booting", "paused"],
  reboot: ["running", "booting"],
};

export function hostingPage({ main, alive }) {
  const keyArea = h("div", { id: "private-key-area" });
  const area = h("div", { id: "hosting-area" }, h("p", { class: "muted" }, "Loading your hosting…"));
  const live = h("span", { class: "live", "data-testid": "live", title: "live state updates" }, "connecting…");
  main.append(h("h1", { tabindex: "-1" }, "My hosting"), keyArea, area);
  renderKeyPanel(keyArea);

  let mode = null; // "create" | "hosting" | "error"
  let view = null; // the hosting view while mode is "hosting"
  let es = null;
  let retryTimer = null;
  let backoff = 2000;

  function apply(next) {
    if (!alive()) return;
    if (next === null) {
      if (mode !== "create") {
        view = null;
        mode = "create";
        createForm(area, { onCreated: created, alive });
      }
      return;
    }
    if (mode === "hosting" && view && view.id === next.id) {
      view.update(next);
      return;
    }
    mode = "hosting";
    view = hostingView(area, next, { apply, live, alive });
  }

  function created(hv) {
    if (hv.private_key) {
      keepKey(hv.private_key);
      renderKeyPanel(keyArea);
    }
    apply(hv);
  }

  async function refresh() {
    try {
      apply(await get("/api/v1/host"));
    } catch (e) {
      if (!alive()) return;
      if (e instanceof ApiError && e.status === 404) apply(null);
      else if (mode === null || mode === "error") {
        mode = "error";
        replace(
          area,
          h("p", {}, "Your hosting could not be loaded."),
          h("button", { type: "button", class: "secondary", on: { click: () => refresh() } }, "Try again"),
        );
        showError(e);
      }
    }
  }

  function setLive(ok) {
    live.textContent = ok ? "live" : "reconnecting…";
    live.classList.toggle("off", !ok);
  }

  function onEvent(e) {
    let data;
    try {
      data = JSON.parse(e.data);
    } catch {
      return;
    }
    apply(data && typeof data === "object" ? data : null);
  }

  function connect() {
    retryTimer = null;
    if (!alive()) return;
    es = new EventSource("/api/v1/host/events");
    es.addEventListener("hosting", onEvent);
    es.addEventListener("open", () => {
      backoff = 2000;
      setLive(true);
    });
    es.addEventListener("error", () => {
      if (!alive()) return;
      setLive(false);
      if (es && es.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error such as 401, or no stream at all). A plain
        // GET tells whether the session ended, and keeps the state fresh meanwhile.
        es.close();
        es = null;
        refresh();
        retryTimer = setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 30000);
      }
    });
  }

  refresh().then(connect);

  return () => {
    if (es) es.close();
    es = null;
    if (retryTimer) clearTimeout(retryTimer);
  };
}

function keepKey(text) {
  const username = session.user ? session.user.username : "user";
  const body = text.endsWith("\n") ? text : `${text}\n`;
  if (generatedKey) URL.revokeObjectURL(generatedKey.url);
  generatedKey = {
    username,
    filename: `roost_${username}_ed25519`,
    text: body,
    url: URL.createObjectURL(new Blob([body], { type: "application/octet-stream" })),
  };
}

function renderKeyPanel(area) {
  if (!generatedKey || !session.user || generatedKey.username !== session.user.username) {
    replace(area);
    return;
  }
  const k = generatedKey;
  const pre = h("pre", { class: "key", "data-testid": "private-key" }, k.text);
  replace(
    area,
    h(
      "section",
      { class: "card warning", "aria-labelledby": "private-key-title", "data-testid": "private-key-panel" },
      h("h2", { id: "private-key-title" }, "Your private SSH key"),
      h(
        "p",
        { role: "alert" },
        h("strong", {}, "It is shown only once. "),
        "roost does not keep it: download it now and keep it safe. Anyone with this file can log in to your VM.",
      ),
      h(
        "p",
        {},
        h(
          "a",
          {
            class: "button primary",
            href: k.url,
            download: k.filename,
            "data-testid": "download-key",
            id: "download-key",
          },
          `Download ${k.filename}`,
        ),
      ),
      h("p", {}, "Then make it private to you: ", h("code", {}, `chmod 600 ${k.filename}`)),
      h("details", {}, h("summary", {}, "Show the key"), pre, copyButton(pre, "Copy the key")),
      h(
        "div",
        { class: "actions" },
        h(
          "button",
          {
            type: "button",
            class: "secondary",
            "data-testid": "dismiss-key",
            on: {
              click: () => {
                URL.revokeObjectURL(k.url);
                generatedKey = null;
                replace(area);
                const withKey = document.getElementById("ssh-with-key");
                if (withKey) withKey.hidden = true;
                const h1 = document.querySelector("main h1");
                if (h1) h1.focus();
              },
            },
          },
          "I have saved it: hide the key",
        ),
      ),
    ),
  );
}

async function createForm(area, { onCreated, alive }) {
  replace(area, h("p", { class: "muted" }, "Loading…"));
  let savedKeys = 0;
  try {
    savedKeys = (await get("/api/v1/ssh-keys")).length;
  } catch {
    // not essential: the form is the same but for the "saved keys" choice
  }
  if (!alive()) return;

  const radio = (value, id, testid, checked, disabled) =>
    h("input", {
      type: "radio",
      name: "key-mode",
      value,
      id,
      "data-testid": testid,
      checked,
      disabled,
      "aria-describedby": `${id}-hint`,
    });
  const choice = (input, label, hint) =>
    h(
      "div",
      { class: "choice" },
      input,
      h("label", { for: input.id }, label),
      h("p", { class: "hint", id: `${input.id}-hint` }, hint),
    );
  const generate = radio("generate", "create-generate", "create-generate", savedKeys === 0, savedKeys > 0);
  const saved = savedKeys > 0 ? radio("saved", "create-saved", "create-saved", true, false) : null;
  const own = radio("own", "create-own", "create-own-key", false, false);
  const keyText = h("textarea", {
    id: "create-ssh-key",
    name: "ssh_public_key",
    "data-testid": "create-ssh-key",
    rows: "3",
    spellcheck: "false",
    autocapitalize: "off",
    placeholder: "ssh-ed25519 AAAA… you@laptop",
  });
  const keyField = h(
    "div",
    { class: "field", hidden: true },
    h("label", { for: "create-ssh-key" }, "Your public key (one line, e.g. the contents of ~/.ssh/id_ed25519.pub)"),
    keyText,
  );
  const consolePw = h("input", {
    id: "create-console-password",
    name: "console_password",
    type: "password",
    "data-testid": "console-password",
    autocomplete: "new-password",
    "aria-describedby": "create-console-password-hint",
  });
  const submit = h(
    "button",
    { type: "submit", class: "primary", id: "create-submit", "data-testid": "create-button" },
    "Create my hosting",
  );
  const form = h(
    "form",
    { id: "create-form", class: "card", "data-testid": "create-form", novalidate: true },
    h("h2", {}, "Create your hosting"),
    // For password managers: the console password belongs to this login name on the VM.
    loginNameField(),
    h(
      "p",
      {},
      "You get one virtual machine with a web server. Your site is online as soon as it has booted; you manage it over SSH.",
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "SSH access"),
      choice(
        generate,
        "Generate a key pair for me",
        savedKeys > 0
          ? "Not available while you have saved SSH keys: they are installed instead. Remove them on the SSH keys page to get a generated key pair."
          : "roost makes a new key pair and gives you the private key once, to download.",
      ),
      saved &&
        choice(
          saved,
          `Use my saved SSH keys (${savedKeys})`,
          h("span", {}, "The keys on your ", h("a", { href: "/keys", "data-route": "" }, "SSH keys"), " page."),
        ),
      choice(own, "Paste my own public key", "Only the public half (.pub); your private key never leaves your computer."),
      keyField,
    ),
    h(
      "div",
      { class: "field" },
      h("label", { for: "create-console-password" }, "Console password (optional)"),
      consolePw,
      h(
        "p",
        { class: "hint", id: "create-console-password-hint" },
        "Lets you log in on your VM's console in the browser. It is never used for SSH, which takes keys only.",
      ),
    ),
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("change", () => {
    keyField.hidden = !own.checked;
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    clearError();
    const body = {};
    if (own.checked) {
      const k = keyText.value.trim();
      if (!k) {
        showError("Paste your SSH public key, or choose another option.");
        keyText.focus();
        return;
      }
      body.ssh_public_key = k;
    }
    if (consolePw.value) body.console_password = consolePw.value;
    const wanted = generate.checked;
    busy(submit, async () => {
      const hv = await post("/api/v1/host", body);
      if (wanted && !hv.private_key) {
        showNotice("Your saved SSH keys were installed on the VM; no key pair was generated.");
      }
      onCreated(hv);
    });
  });
  replace(area, form);
}

function hostingView(area, first, { apply, live, alive }) {
  let cur = first;
  let urls = null;

  const state = h("span", { class: "badge", id: "hosting-state", "data-testid": "state" });
  const progressText = h("p", { id: "hosting-progress", "data-testid": "progress" });
  const reason = h("p", { class: "reason", id: "hosting-reason", "data-testid": "reason", hidden: true });
  const steps = h(
    "ol",
    { class: "steps", "aria-label": "Boot progress" },
    STEPS.map(([s, label]) => h("li", { dataset: { step: s } }, label)),
  );
  const sites = h("ul", { class: "links", "data-testid": "site-links" }, h("li", { class: "muted" }, "Loading…"));
  const ssh = h("code", { id: "ssh-command", "data-testid": "ssh-command" }, "…");
  const sshWithKey = h("div", { id: "ssh-with-key", hidden: true });
  const consolePassword = consolePasswordForm({ alive });
  const sleep = sleepSection({ alive });
  const snapshots = snapshotsSection({ alive });

  const buttons = {};
  for (const [action, label] of [
    ["start", "Start"],
    ["stop", "Stop"],
    ["reboot", "Reboot"],
  ]) {
    buttons[action] = h(
      "button",
      {
        type: "button",
        class: "secondary",
        id: `action-${action}`,
        "data-testid": `action-${action}`,
        on: {
          click: (e) =>
            busy(e.currentTarget, async () => {
              const hv = await post(`/api/v1/host/${seg(cur.id)}/${action}`);
              if (hv && hv.id) apply({ ...hv, domains: hv.domains || cur.domains });
            }).then(() => syncButtons()),
        },
      },
      label,
    );
  }
  const deleteBtn = h(
    "button",
    {
      type: "button",
      class: "danger",
      id: "delete-hosting",
      "data-testid": "delete-button",
      on: {
        click: async (e) => {
          const btn = e.currentTarget;
          const username = session.user.username;
          const ok = await confirmDialog({
            title: "Delete your hosting?",
            body: h(
              "p",
              {},
              "The VM, its disk with your site and everything else on it, and your domains are removed. This cannot be undone.",
            ),
            confirmText: "Delete for good",
            danger: true,
            requireText: username,
            testid: "delete-dialog",
          });
          if (!ok) return;
          await busy(btn, async () => {
            const hv = await del(`/api/v1/host/${seg(cur.id)}`);
            showNotice("Your hosting is being deleted.");
            if (hv && hv.id) apply({ ...hv, domains: [] });
          });
          syncButtons();
        },
      },
    },
    "Delete my hosting…",
  );

  function syncButtons() {
    for (const [action, states] of Object.entries(ACTIONS)) {
      buttons[action].disabled = !states.includes(cur.state) || buttons[action].hasAttribute("aria-busy");
    }
    deleteBtn.disabled = cur.state === "deleting" || deleteBtn.hasAttribute("aria-busy");
  }

  function renderSites() {
    if (!urls) return;
    const items = [];
    const seen = new Set();
    const add = (href, testid) => {
      if (!href || seen.has(href)) return;
      seen.add(href);
      items.push(
        h("li", {}, h("a", { href, "data-testid": testid, target: "_blank", rel: "noopener noreferrer" }, href)),
      );
    };
    add(urls.web, "site-link");
    add(urls.web_host, "site-link");
    const scheme = urls.web.startsWith("https:") ? "https" : "http";
    for (const d of cur.domains || []) {
      if (d.state === "verified") add(`${scheme}://${d.name}/`, "domain-link");
    }
    replace(sites, items);
  }

  let sshFor; // the key the SSH lines were last drawn for
  function renderSsh() {
    if (!urls) return;
    ssh.textContent = urls.ssh;
    const k = generatedKey;
    sshFor = k;
    if (k && session.user && k.username === session.user.username) {
      const withKey = h("code", { "data-testid": "ssh-command-with-key" }, urls.ssh.replace(/^ssh /, `ssh -i ${k.filename} `));
      replace(
        sshWithKey,
        h("p", {}, "With the key you downloaded (run it where you saved the file):"),
        h("div", { class: "command" }, withKey, copyButton(withKey, "Copy")),
      );
      sshWithKey.hidden = false;
    } else {
      sshWithKey.hidden = true;
    }
  }

  function update(next) {
    const domainsChanged = JSON.stringify(next.domains || []) !== JSON.stringify(cur.domains || []);
    cur = { ...next, domains: next.domains || cur.domains };
    state.textContent = cur.state;
    state.className = `badge state-${cur.state}`;
    progressText.textContent = (cur.asleep && cur.state === "paused" ? PROGRESS.asleep : PROGRESS[cur.state]) || cur.state;
    reason.hidden = !cur.reason;
    reason.textContent = cur.reason ? `Reason: ${cur.reason}` : "";
    const idx = STEPS.findIndex(([s]) => s === cur.state);
    steps.hidden = idx < 0;
    steps.querySelectorAll("li").forEach((li, i) => {
      li.classList.toggle("done", i < idx || cur.state === "running");
      if (i === idx && cur.state !== "running") li.setAttribute("aria-current", "step");
      else li.removeAttribute("aria-current");
    });
    syncButtons();
    consolePassword.update(cur);
    sleep.update(cur);
    snapshots.setState(cur.state);
    if (domainsChanged) renderSites();
    if (sshFor !== generatedKey) renderSsh();
  }

  replace(
    area,
    h(
      "section",
      { class: "card", "aria-labelledby": "status-title" },
      h("div", { class: "card-head" }, h("h2", { id: "status-title" }, "Status"), live),
      h("p", { class: "state-line" }, "State: ", state),
      h("div", { "aria-live": "polite" }, progressText, reason),
      steps,
      h(
        "p",
        { class: "muted small" },
        "Created ",
        timeEl(cur.created_at),
        ` · address ${cur.ip} · SSH port ${cur.ssh_port}`,
      ),
    ),
    h("section", { class: "card", "aria-labelledby": "site-title" }, h("h2", { id: "site-title" }, "Your site"), sites),
    h(
      "section",
      { class: "card", "aria-labelledby": "ssh-title" },
      h("h2", { id: "ssh-title" }, "SSH"),
      h("div", { class: "command" }, ssh, copyButton(ssh, "Copy", { "data-testid": "copy-ssh" })),
      sshWithKey,
      h(
        "p",
        { class: "muted small" },
        "Your site's files are in /var/www/html. For a shell without SSH, use the ",
        routeLink("/console", "console", { "data-testid": "console-link-inline" }),
        ".",
      ),
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "power-title" },
      h("h2", { id: "power-title" }, "Power and console"),
      h("div", { class: "actions left" }, buttons.start, buttons.stop, buttons.reboot),
      consolePassword.el,
      h(
        "p",
        {},
        routeLink("/console", "Open the console", { class: "button secondary", id: "console-link", "data-testid": "console-link" }),
      ),
    ),
    sleep.el,
    snapshots.el,
    h(
      "section",
      { class: "card danger-zone", "aria-labelledby": "delete-title" },
      h("h2", { id: "delete-title" }, "Delete"),
      h("p", { class: "muted small" }, "Removes the VM and everything on it."),
      deleteBtn,
    ),
  );
  cur = { ...first, domains: first.domains || [] };
  update(cur);

  get("/api/v1/host/access-urls")
    .then((u) => {
      if (!alive()) return;
      urls = u;
      renderSites();
      renderSsh();
    })
    .catch((e) => {
      if (!alive()) return;
      replace(sites, h("li", { class: "muted" }, "The addresses could not be loaded."));
      if (!(e instanceof ApiError && e.status === 404)) showError(e);
    });

  return { id: first.id, update };
}
