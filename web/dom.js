// Small DOM helpers. Elements are built with the DOM API only: no innerHTML with data, no
// inline styles (the Content-Security-Policy allows neither), no inline handlers.

/**
 * Builds an element. `attrs`: `class`, `text`, `dataset` (object), `on` (object of event
 * listeners), boolean attributes as true/false, anything else as an attribute. Children
 * are nodes, strings, or arrays of them; null/undefined/false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = Array.isArray(v) ? v.filter(Boolean).join(" ") : v;
    else if (k === "text") el.textContent = String(v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === "style") throw new Error("inline styles are not allowed by the page's CSP");
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

/** Replaces every child of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A link to a dashboard page (handled by the router, no page load). */
export function routeLink(href, text, attrs = {}) {
  return h("a", { ...attrs, href, "data-route": "" }, text);
}

/** "3 minutes ago"-style text for an RFC 3339 time, with the exact time as a tooltip. */
export function timeEl(iso) {
  if (!iso) return h("span", { text: "—" });
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return h("span", { text: iso });
  return h("time", { datetime: iso, title: d.toLocaleString() }, ago(d));
}

function ago(d) {
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (s < 0) return d.toLocaleString();
  if (s < 60) return "just now";
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const hrs = Math.round(m / 60);
  if (hrs < 48) return `${hrs} h ago`;
  return d.toLocaleDateString();
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function duration(secs) {
  if (secs === null || secs === undefined) return "—";
  const d = Math.floor(secs / 86400);
  const hrs = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  if (d) return `${d} d ${hrs} h`;
  if (hrs) return `${hrs} h ${m} min`;
  if (m) return `${m} min`;
  return `${Math.floor(secs)} s`;
}

/** Remembers which keyed control had focus, runs `rerender`, and focuses it again. */
export function keepFocus(container, rerender) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.focusKey : undefined;
  rerender();
  if (key) {
    const again = container.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
    if (again && !again.disabled) again.focus();
  }
}
