// The hosting page's Snapshots section: list, take, restore (while the VM is stopped),
// delete (/api/v1/host/snapshots). Outcomes are said in the section itself
// (`data-testid="snapshot-message"`), next to the buttons, as the section sits low on
// the page.

import { ApiError, del, get, post, seg } from "./api.js";
import { h, keepFocus, replace, timeEl } from "./dom.js";
import { busy, confirmDialog, sectionMessage } from "./ui.js";

// The hosting states the server takes, restores and deletes snapshots in (the hosting
// actor decides; this only greys out buttons that would be refused).
const RESTORE = ["stopped", "failed"];
const BUSY = ["provisioning", "deleting"];

/**
 * The section, for the hosting view: `el` to place, `setState(state)` on every update of
 * the hosting (greys out the buttons the state does not allow).
 */
export function snapshotsSection({ alive }) {
  let state = null;
  let data = null; // the last GET: { snapshots, limit }

  const count = h("span", { class: "muted small", "data-testid": "snapshots-count" });
  const message = h("p", { class: "small", role: "status", "data-testid": "snapshot-message", hidden: true });
  const { say, hush, failed } = sectionMessage(message, (text, e) => {
    // api.js names the field `name` for the domains page: here it is the snapshot's.
    if (e.code === "invalid_field") text = text.replace(/^(?:[A-Z][a-z ]*)?[Nn]ame: /, "");
    if (text) text = text[0].toUpperCase() + text.slice(1);
    if (e.code === "invalid_state" && /restore/.test(text)) text += " Stop the VM first.";
    return text;
  });
  const restoreHint = h(
    "p",
    { class: "hint", id: "snapshot-restore-hint", "data-testid": "snapshot-restore-hint", hidden: true },
    "Stop the VM to restore a snapshot (Power and console, above); start it again afterwards.",
  );
  const list = h("div", { id: "snapshots-list", "data-testid": "snapshots-list" }, h("p", { class: "muted" }, "Loading…"));
  const input = h("input", {
    id: "snapshot-name",
    name: "name",
    "data-testid": "snapshot-input",
    autocomplete: "off",
    autocapitalize: "off",
    spellcheck: "false",
    maxlength: "40",
    placeholder: "before-upgrade",
    "aria-describedby": "snapshot-name-hint",
  });
  const submit = h(
    "button",
    { type: "submit", class: "primary", id: "snapshot-take", "data-testid": "snapshot-take" },
    "Take a snapshot",
  );
  const limitHint = h("p", { class: "hint", "data-testid": "snapshot-limit-hint", hidden: true });
  const form = h(
    "form",
    { class: "snapshot-form", id: "snapshot-form", "data-testid": "snapshot-form", novalidate: true },
    h(
      "div",
      { class: "field" },
      h("label", { for: "snapshot-name" }, "Name"),
      h("div", { class: "inline" }, input, submit),
      h(
        "p",
        { class: "hint", id: "snapshot-name-hint" },
        "Lowercase letters, digits, '.', '_' and '-', starting with a letter; up to 40.",
      ),
      limitHint,
    ),
  );
  const off = h(
    "p",
    { class: "muted", "data-testid": "snapshots-off", hidden: true },
    "Snapshots are turned off on this host.",
  );
  const body = h(
    "div",
    {},
    h(
      "p",
      { class: "muted small" },
      "A snapshot keeps your VM's disk as it is at that moment. Taken while the VM runs, it is like a power cut at that instant: run ",
      h("code", {}, "sync"),
      " in the VM first. Restoring puts the disk back as it was and keeps the snapshot.",
    ),
    list,
    restoreHint,
    form,
  );
  const el = h(
    "section",
    { class: "card", id: "snapshots", "aria-labelledby": "snapshots-title", "data-testid": "snapshots" },
    h("div", { class: "card-head" }, h("h2", { id: "snapshots-title" }, "Snapshots"), count),
    off,
    body,
    message,
  );




  async function load() {
    try {
      const d = await get("/api/v1/host/snapshots");
      if (!alive()) return;
      data = d;
      keepFocus(el, render);
    } catch (e) {
      if (!alive()) return;
      replace(list, h("p", {}, "Your snapshots could not be loaded."));
      if (!(e instanceof ApiError && e.status === 404)) failed(e);
    }
  }

  function render() {
    if (!data) return;
    const { snapshots, limit } = data;
    off.hidden = limit !== 0 || snapshots.length > 0;
    body.hidden = !off.hidden;
    count.textContent = limit === 0 ? "" : `${snapshots.length} of ${limit}`;
    count.title = limit === 0 ? "" : `This host keeps up to ${limit} snapshots per hosting.`;
    const full = snapshots.length >= limit;
    limitHint.hidden = !full;
    limitHint.textContent = full
      ? limit === 0
        ? "Snapshots are turned off on this host: delete the ones you have."
        : `You have the ${limit} this host allows: delete one to take another.`
      : "";
    if (!snapshots.length) {
      replace(list, h("p", { class: "muted", "data-testid": "snapshots-empty" }, "No snapshots yet."));
    } else {
      replace(
        list,
        h(
          "ul",
          { class: "items" },
          snapshots.map((s) =>
            h(
              "li",
              { class: "item", "data-testid": "snapshot-item", dataset: { name: s.name } },
              h(
                "div",
                { class: "item-main" },
                h("strong", { class: "wrap", "data-testid": "snapshot-name" }, s.name),
                h("span", { class: "muted small" }, "Taken ", timeEl(s.created_at)),
              ),
              h(
                "div",
                { class: "actions left" },
                h(
                  "button",
                  {
                    type: "button",
                    class: "secondary small",
                    "data-testid": "snapshot-restore",
                    dataset: { focusKey: `restore-${s.name}` },
                    "aria-label": `Restore ${s.name}`,
                    "aria-describedby": "snapshot-restore-hint",
                    on: { click: (e) => restore(e.currentTarget, s.name) },
                  },
                  "Restore",
                ),
                h(
                  "button",
                  {
                    type: "button",
                    class: "danger small",
                    "data-testid": "snapshot-delete",
                    dataset: { focusKey: `delete-${s.name}` },
                    "aria-label": `Delete ${s.name}`,
                    on: { click: (e) => remove(e.currentTarget, s.name) },
                  },
                  "Delete",
                ),
              ),
            ),
          ),
        ),
      );
    }
    sync();
  }

  // Buttons follow the hosting's state (and stay off while their request runs).
  function sync() {
    const canRestore = RESTORE.includes(state);
    const busyState = BUSY.includes(state);
    const has = !!data && data.snapshots.length > 0;
    restoreHint.hidden = !has || canRestore || busyState;
    list.querySelectorAll("[data-testid=snapshot-restore]").forEach((b) => {
      b.disabled = !canRestore || b.hasAttribute("aria-busy");
    });
    list.querySelectorAll("[data-testid=snapshot-delete]").forEach((b) => {
      b.disabled = busyState || b.hasAttribute("aria-busy");
    });
    const full = !!data && data.snapshots.length >= data.limit;
    submit.disabled = busyState || full || submit.hasAttribute("aria-busy");
  }

  function setState(next) {
    if (next === state) return;
    state = next;
    sync();
  }

  async function restore(btn, name) {
    const ok = await confirmDialog({
      title: `Restore ${name}?`,
      body: h(
        "p",
        {},
        `Your VM's disk goes back to how it was when ${name} was taken: whatever was written since is lost. The snapshot stays. Start the VM afterwards.`,
      ),
      confirmText: "Restore",
      danger: true,
      testid: "snapshot-restore-dialog",
    });
    if (!ok) return;
    hush();
    await busy(
      btn,
      async () => {
        await post(`/api/v1/host/snapshots/${seg(name)}/restore`);
        say(true, `The disk is back as it was at ${name}. Start the VM to use it.`);
      },
      failed,
    );
    await load();
  }

  async function remove(btn, name) {
    const ok = await confirmDialog({
      title: `Delete ${name}?`,
      body: h("p", {}, "The snapshot is removed for good; your VM's disk as it is now stays."),
      confirmText: "Delete",
      danger: true,
      testid: "snapshot-delete-dialog",
    });
    if (!ok) return;
    hush();
    await busy(
      btn,
      async () => {
        await del(`/api/v1/host/snapshots/${seg(name)}`);
        say(true, `${name} was deleted.`);
      },
      failed,
    );
    await load();
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    hush();
    const name = input.value.trim();
    if (!name) {
      say(false, "Enter a name for the snapshot, such as before-upgrade.");
      input.focus();
      return;
    }
    busy(
      submit,
      async () => {
        const s = await post("/api/v1/host/snapshots", { name });
        input.value = "";
        say(true, `${s.name} is taken.`);
      },
      failed,
    ).then(load);
  });

  load();
  return { el, setState, load };
}
