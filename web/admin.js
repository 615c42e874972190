// Administration: capacity, every VM with its actions and console, users, the audit log.
// Refreshed every 5 s while the page is shown (and the tab visible).

import { get, post, seg, session } from "./api.js";
import { bytes, duration, h, keepFocus, replace, routeLink, timeEl } from "./dom.js";
import { busy, confirmDialog, showError, showNotice } from "./ui.js";

const REFRESH_MS = 5000;

// Which actions each state allows (lifecycle::plan's "do it" cells).
const ACTIONS = [
  ["start", ["stopped", "failed"]],
  ["stop", ["running", "booting", "paused"]],
  ["reboot", ["running", "booting"]],
  ["pause", ["running", "booting"]],
  ["resume", ["paused"]],
  ["kill", ["running", "booting", "paused"]],
];

export function adminPage({ main, alive }) {
  const capacity = h("div", { "data-testid": "admin-capacity" }, h("p", { class: "muted" }, "Loading…"));
  const vms = h("div", { "data-testid": "admin-vms" }, h("p", { class: "muted" }, "Loading…"));
  const users = h("div", { "data-testid": "admin-users" }, h("p", { class: "muted" }, "Loading…"));
  const audit = h("div", { "data-testid": "admin-audit" }, h("p", { class: "muted" }, "Loading…"));
  const updated = h("span", { class: "muted small", "data-testid": "admin-updated" }, "");
  main.append(
    h("div", { class: "card-head" }, h("h1", { tabindex: "-1" }, "Administration"), updated),
    section("capacity-title", "Capacity", capacity),
    section("vms-title", "Virtual machines", vms),
    section("users-title", "Users", users),
    section("audit-title", "Audit log (newest first)", audit),
  );

  // CPU time of each VM at the last refresh, for a CPU share over the interval.
  const lastCpu = new Map();
  let timer = null;
  let inFlight = false;
  let failedBefore = false;

  async function refresh() {
    if (inFlight || !alive()) return;
    if (document.hidden) return;
    inFlight = true;
    try {
      const [cap, list, us, log] = await Promise.all([
        get("/api/v1/admin/capacity"),
        get("/api/v1/admin/vms"),
        get("/api/v1/admin/users"),
        get("/api/v1/admin/audit?limit=50"),
      ]);
      // The list has no CPU or memory figures (yet): those come from each running VM's
      // GET /api/v1/admin/vms/{id}, unless the list carries them.
      const details = await Promise.all(
        list.map((vm) =>
          vm.pid && vm.cpu_time_secs === undefined && vm.rss_bytes === undefined
            ? get(`/api/v1/admin/vms/${seg(vm.id)}`).catch(() => null)
            : Promise.resolve(null),
        ),
      );
      if (!alive()) return;
      renderCapacity(cap);
      keepFocus(vms, () => renderVms(list, details));
      renderUsers(us);
      renderAudit(log);
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
      failedBefore = false;
    } catch (e) {
      // One banner per outage, not one every 5 s.
      if (alive() && !failedBefore) showError(e);
      failedBefore = true;
      updated.textContent = "not updated: see the message above";
    } finally {
      inFlight = false;
    }
  }

  function renderCapacity(c) {
    const row = (label, used, budget, unit, testid) =>
      h(
        "div",
        { class: "meter-row", "data-testid": testid },
        h("span", { class: "meter-label" }, label),
        budget
          ? h("meter", { min: "0", max: String(budget), value: String(Math.min(used, budget)), high: String(budget * 0.9), "aria-label": label })
          : null,
        h("span", {}, budget ? `${used} / ${budget} ${unit}` : `${used} ${unit} (no limit)`),
      );
    replace(
      capacity,
      row("VMs", c.vms, c.max_vms, "", "capacity-vms"),
      row("Memory", c.memory_mib_used, c.memory_mib_budget, "MiB", "capacity-memory"),
      row("Disk", c.disk_gib_used, c.disk_gib_budget, "GiB", "capacity-disk"),
      h(
        "p",
        { class: "muted small" },
        `Host: ${c.host_memory_mib} MiB RAM, ${c.host_disk_gib} GiB disk. One more VM takes ${c.vm_memory_mib} MiB and ${c.vm_disk_gib} GiB.`,
      ),
    );
  }

  function cpuText(vm, d) {
    const secs = d && typeof d.cpu_time_secs === "number" ? d.cpu_time_secs : vm.cpu_time_secs;
    if (typeof secs !== "number") return "—";
    const now = performance.now();
    const prev = lastCpu.get(vm.id);
    lastCpu.set(vm.id, { secs, at: now });
    let share = "";
    if (prev && now > prev.at && secs >= prev.secs) {
      share = ` (${(((secs - prev.secs) / ((now - prev.at) / 1000)) * 100).toFixed(0)} %)`;
    }
    return `${secs.toFixed(1)} s${share}`;
  }

  function renderVms(list, details) {
    if (!list.length) {
      replace(vms, h("p", { class: "muted" }, "No VMs."));
      return;
    }
    const rows = list.map((vm, i) => {
      const d = details[i];
      // Memory as the VM's cgroup counts it (what its limit and the metrics count), else
      // the QEMU process's resident set.
      const src = d || vm;
      const rss = typeof src.memory_bytes === "number" ? src.memory_bytes : src.rss_bytes;
      const actions = ACTIONS.map(([action, states]) =>
        h(
          "button",
          {
            type: "button",
            class: action === "kill" ? "danger small" : "secondary small",
            disabled: !states.includes(vm.state),
            "data-testid": `vm-${action}`,
            dataset: { focusKey: `${vm.id}-${action}` },
            "aria-label": `${action} ${vm.slug}`,
            on: { click: (e) => act(e.currentTarget, vm, action) },
          },
          action,
        ),
      );
      return h(
        "tr",
        { "data-testid": "vm-row", dataset: { id: vm.id } },
        td("VM", h("strong", {}, vm.slug), h("br"), h("code", { class: "small wrap" }, vm.id)),
        td("Owner", vm.owner),
        td(
          "State",
          h("span", { class: `badge state-${vm.state}`, "data-testid": "vm-state" }, vm.state),
          vm.qmp_status && vm.qmp_status !== vm.state ? h("div", { class: "small muted" }, `QEMU: ${vm.qmp_status}`) : null,
          vm.reason ? h("div", { class: "small reason" }, vm.reason) : null,
        ),
        td("CPU", cpuText(vm, d)),
        td("Memory", bytes(rss)),
        td("Uptime", duration(vm.uptime_secs)),
        td("Address", `${vm.ip}`, h("br"), h("span", { class: "small muted" }, `SSH ${vm.ssh_port}`)),
        td(
          "Actions",
          h(
            "div",
            { class: "actions left" },
            actions,
            routeLink(`/admin/console/${encodeURIComponent(vm.id)}`, "console", {
              class: "button secondary small",
              "data-testid": "vm-console-link",
              dataset: { focusKey: `${vm.id}-console` },
              "aria-label": `console of ${vm.slug}`,
            }),
          ),
        ),
      );
    });
    replace(vms, table(["VM", "Owner", "State", "CPU", "Memory", "Uptime", "Address", "Actions"], rows));
  }

  async function userAct(btn, username, action) {
    if (action === "disable") {
      const ok = await confirmDialog({
        title: `Disable ${username}?`,
        body: h(
          "p",
          {},
          "The account cannot log in, and every session and token it holds ends at once. Its hosting keeps running.",
        ),
        confirmText: "Disable",
        danger: true,
        testid: "user-disable-dialog",
      });
      if (!ok) return;
    }
    await busy(btn, async () => {
      await post(`/api/v1/admin/users/${seg(username)}/${action}`);
      showNotice(`${username} is ${action}d.`);
      await refresh();
    });
  }

  async function act(btn, vm, action) {
    if (action === "kill" || action === "stop") {
      const ok = await confirmDialog({
        title: `${action === "kill" ? "Kill" : "Stop"} ${vm.slug}?`,
        body: h(
          "p",
          {},
          action === "kill"
            ? "The VM's process is ended at once, like pulling the plug. Unsaved data in the guest is lost."
            : "The guest is asked to power off; its site is down until it is started again.",
        ),
        confirmText: action === "kill" ? "Kill" : "Stop",
        danger: true,
        testid: `vm-${action}-dialog`,
      });
      if (!ok) return;
    }
    await busy(btn, async () => {
      await post(`/api/v1/admin/vms/${seg(vm.id)}/${action}`);
      showNotice(`${action} of ${vm.slug} requested.`);
      await refresh();
    });
  }

  function renderUsers(list) {
    replace(
      users,
      table(
        ["Username", "Email", "Role", "Created", "Disabled", "Actions"],
        list.map((u) => {
          const action = u.disabled_at ? "enable" : "disable";
          const own = session.user && session.user.username === u.username;
          return h(
            "tr",
            { "data-testid": "user-row", dataset: { username: u.username } },
            td("Username", h("strong", {}, u.username)),
            td("Email", u.email || "—"),
            td("Role", u.role),
            td("Created", timeEl(u.created_at)),
            td("Disabled", u.disabled_at ? timeEl(u.disabled_at) : "no"),
            td(
              "Actions",
              own
                ? h("span", { class: "muted small" }, "you")
                : h(
                    "button",
                    {
                      type: "button",
                      class: action === "disable" ? "danger small" : "secondary small",
                      "data-testid": `user-${action}`,
                      dataset: { focusKey: `${u.username}-${action}` },
                      "aria-label": `${action} ${u.username}`,
                      on: { click: (e) => userAct(e.currentTarget, u.username, action) },
                    },
                    action,
                  ),
            ),
          );
        }),
      ),
    );
  }

  function renderAudit(list) {
    if (!list.length) {
      replace(audit, h("p", { class: "muted" }, "Nothing yet."));
      return;
    }
    replace(
      audit,
      table(
        ["When", "Who", "Action", "Target", "Detail"],
        list.map((e) =>
          h(
            "tr",
            { "data-testid": "audit-row" },
            td("When", timeEl(e.at)),
            td("Who", e.actor),
            td("Action", e.action),
            td("Target", h("span", { class: "wrap" }, e.target)),
            td("Detail", h("span", { class: "wrap" }, e.detail)),
          ),
        ),
      ),
    );
  }

  const onVisible = () => {
    if (!document.hidden) refresh();
  };
  document.addEventListener("visibilitychange", onVisible);
  refresh();
  timer = setInterval(refresh, REFRESH_MS);

  return () => {
    clearInterval(timer);
    document.removeEventListener("visibilitychange", onVisible);
  };
}

function section(id, title, content) {
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), content);
}

function td(label, ...children) {
  return h("td", { dataset: { label } }, h("div", { class: "cell" }, ...children));
}

function table(headers, rows) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "responsive" },
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows),
    ),
  );
}
