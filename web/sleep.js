// The hosting page's "Sleep while idle" section (/api/v1/host/sleep): a switch that lets
// the VM sleep (be paused, using no CPU) while nobody visits its site or holds an SSH
// session; the next visit or SSH connection wakes it. Outcomes are said in the section
// itself (`data-testid="sleep-message"`), as in the Snapshots section.

import { ApiError, api, get } from "./api.js";
import { h } from "./dom.js";
import { busy, sectionMessage } from "./ui.js";

/** "15 minutes", "1 hour and 30 minutes", "2 days": an idle period in words. */
function period(secs) {
  const units = [
    [86400, "day"],
    [3600, "hour"],
    [60, "minute"],
    [1, "second"],
  ];
  const parts = [];
  let rest = Math.max(0, Math.round(secs));
  for (const [n, name] of units) {
    const k = Math.floor(rest / n);
    rest -= k * n;
    if (k) parts.push(`${k} ${name}${k === 1 ? "" : "s"}`);
    if (parts.length === 2) break;
  }
  return parts.join(" and ") || "0 seconds";
}

/**
 * The section, for the hosting view: `el` to place, `update(hosting)` on every update of
 * the hosting (its `sleep_when_idle`, `asleep` and `state`).
 */
export function sleepSection({ alive }) {
  let enabled = false;
  let asleep = false;
  let after; // seconds, null when this host keeps every VM awake; undefined until loaded
  let state = null;

  const toggle = h("input", {
    type: "checkbox",
    role: "switch",
    id: "sleep-toggle",
    name: "enabled",
    "data-testid": "sleep-toggle",
    disabled: true,
    "aria-describedby": "sleep-toggle-hint",
  });
  const hint = h("p", { class: "hint", id: "sleep-toggle-hint", "data-testid": "sleep-hint" }, "Loading…");
  const status = h(
    "p",
    { class: "small", role: "status", "data-testid": "sleep-status", hidden: true },
    h("strong", {}, "Asleep:"),
    " the next visit wakes it.",
  );
  const message = h("p", { class: "small", role: "status", "data-testid": "sleep-message", hidden: true });
  const { say, hush, failed } = sectionMessage(message);
  const el = h(
    "section",
    { class: "card", id: "sleep", "aria-labelledby": "sleep-title", "data-testid": "sleep" },
    h("h2", { id: "sleep-title" }, "Sleep while idle"),
    h("div", { class: "choice" }, toggle, h("label", { for: "sleep-toggle" }, "Let the VM sleep while nobody visits"), hint),
    status,
    message,
  );




  function render() {
    const busyNow = toggle.hasAttribute("aria-busy");
    if (!busyNow) toggle.checked = enabled;
    if (after === undefined) {
      hint.textContent = "Loading…";
    } else if (after === null) {
      hint.textContent = "This host keeps every VM awake: sleeping while idle is not available here.";
    } else {
      hint.textContent = `After ${period(after)} without visits or SSH sessions the VM is paused and uses no CPU; the next visit wakes it. A sleeping VM runs no cron jobs and opens no outgoing connections.`;
    }
    // Where the host lets no VM sleep, the switch can still be turned off.
    toggle.disabled =
      busyNow || after === undefined || (after === null && !enabled) || state === "deleting";
    status.hidden = !asleep;
  }

  function take(v) {
    if (!v) return;
    enabled = !!v.enabled;
    asleep = !!v.asleep;
    after = v.after_secs === undefined ? null : v.after_secs;
  }

  async function load() {
    try {
      const v = await get("/api/v1/host/sleep");
      if (!alive()) return;
      take(v);
      render();
    } catch (e) {
      if (!alive()) return;
      hint.textContent = "This setting could not be loaded.";
      if (!(e instanceof ApiError && e.status === 404)) failed(e);
    }
  }

  /** The hosting as the page last got it (GET /api/v1/host or its live events). */
  function update(hv) {
    state = hv.state;
    if (typeof hv.sleep_when_idle === "boolean") enabled = hv.sleep_when_idle;
    asleep = !!hv.asleep;
    render();
  }

  toggle.addEventListener("change", () => {
    const want = toggle.checked;
    hush();
    busy(
      toggle,
      async () => {
        const v = await api("PUT", "/api/v1/host/sleep", { enabled: want });
        if (!alive()) return;
        take(v);
        say(
          true,
          want
            ? `On: the VM sleeps after ${period(after || 0)} without visits.`
            : "Off: the VM stays awake.",
        );
      },
      failed,
    ).then(() => {
      if (alive()) render();
    });
  });

  load();
  return { el, update, load };
}
