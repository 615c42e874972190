// The serial console: xterm.js (with the fit addon) over a WebSocket.
//
// Protocol: binary frames both ways carry terminal bytes; the server's text frames are
// JSON ({"type":"hello","writable":b,"viewers":n}, {"type":"viewers","count":n},
// {"type":"closed","reason":"..."}); the client's only text frame is
// {"type":"resize","cols":c,"rows":r}.

import { ApiError, get, seg, session } from "./api.js";
import { h, replace, routeLink } from "./dom.js";
import { showError } from "./ui.js";

// Keep in step with xterm-csp.css, which states xterm's theme and font rules (its own
// <style> elements are refused by the page's Content-Security-Policy).
const FONT = 'ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace';
const FONT_SIZE = 14;

let loading = null;

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src;
    s.async = false;
    s.addEventListener("load", resolve);
    s.addEventListener("error", () => reject(new Error(`could not load ${src}`)));
    document.head.append(s);
  });
}

function loadStyle(href) {
  if (document.querySelector(`link[rel="stylesheet"][href="${href}"]`)) return;
  document.head.append(h("link", { rel: "stylesheet", href }));
}

/** xterm.js and the fit addon (UMD builds: they define window.Terminal and window.FitAddon). */
function loadXterm() {
  if (!loading) {
    loading = (async () => {
      loadStyle("/assets/vendor/xterm.css");
      loadStyle("/assets/xterm-csp.css");
      if (!window.Terminal) await loadScript("/assets/vendor/xterm.js");
      if (!window.FitAddon) await loadScript("/assets/vendor/addon-fit.js");
      if (!window.Terminal || !window.FitAddon || !window.FitAddon.FitAddon) {
        throw new Error("the terminal scripts did not load");
      }
    })().catch((e) => {
      loading = null;
      throw e;
    });
  }
  return loading;
}

/** `vmId`: an administrator's console of any VM; else the user's own. */
export function consolePage({ main, alive, params }) {
  const vmId = params && params[0] ? decodeURIComponent(params[0]) : null;
  const title = h("h1", { tabindex: "-1" }, vmId ? "VM console" : "Console");
  const intro = h("p", { class: "muted" });
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  main.append(title, intro, body);

  let stop = null;
  let gone = false;

  (async () => {
    try {
      if (vmId) {
        get(`/api/v1/admin/vms/${seg(vmId)}`)
          .then((vm) => {
            if (alive() && vm) title.textContent = `Console of ${vm.slug} (owner ${vm.owner}, ${vm.state})`;
          })
          .catch(() => {});
        intro.textContent = "Everything typed here goes to the VM's serial console, as root would see it.";
      } else {
        let hv;
        try {
          hv = await get("/api/v1/host");
        } catch (e) {
          if (e instanceof ApiError && e.status === 404) {
            if (!alive()) return;
            replace(body, h("p", { "data-testid": "console-no-hosting" }, "You have no hosting yet. ", routeLink("/", "Create one"), " first."));
            return;
          }
          throw e;
        }
        if (!alive()) return;
        intro.textContent =
          "Your VM's serial console. Log in with your username and the console password you chose when creating the hosting (SSH never uses it).";
        if (hv.state !== "running" && hv.state !== "booting") {
          intro.textContent += ` Your hosting is ${hv.state}: the console shows output while it runs.`;
        }
      }
      await loadXterm();
      if (!alive() || gone) return;
      stop = terminal(body, vmId, alive);
    } catch (e) {
      if (!alive()) return;
      replace(body, h("p", {}, "The console could not be started."));
      showError(e);
    }
  })();

  return () => {
    gone = true;
    if (stop) stop();
  };
}

function terminal(body, vmId, alive) {
  const status = h("span", { id: "console-status", "data-testid": "console-status" }, "connecting…");
  const modeEl = h("span", { class: "badge", id: "console-mode", "data-testid": "console-mode" }, "—");
  const viewers = h("span", { id: "viewers", "data-testid": "viewers" }, "—");
  const reconnect = h(
    "button",
    { type: "button", class: "primary small", id: "reconnect", "data-testid": "reconnect", hidden: true },
    "Reconnect",
  );
  const container = h("div", { id: "terminal", class: "terminal", "data-testid": "terminal" });
  const after = routeLink(vmId ? "/admin" : "/", vmId ? "Back to the VMs" : "Back to my hosting", {
    id: "console-after",
  });
  replace(
    body,
    h(
      "div",
      { class: "console-bar", role: "group", "aria-label": "Console connection" },
      h("span", {}, "Status: ", status),
      h("span", {}, modeEl),
      h("span", {}, "Viewers: ", viewers),
      reconnect,
    ),
    h(
      "p",
      { class: "hint", id: "console-hint" },
      "Press Enter to get a login prompt. Keys go to the terminal while it has focus (Tab too); press Ctrl+] to leave it.",
    ),
    container,
    h("p", {}, after),
  );

  const term = new window.Terminal({
    fontFamily: FONT,
    fontSize: FONT_SIZE,
    cursorBlink: true,
    scrollback: 5000,
    disableStdin: true,
  });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(container);
  const helper = container.querySelector("textarea");
  if (helper) helper.setAttribute("aria-describedby", "console-hint");
  term.attachCustomKeyEventHandler((ev) => {
    if (ev.type === "keydown" && ev.ctrlKey && ev.code === "BracketRight") {
      ev.preventDefault();
      after.focus();
      return false;
    }
    return true;
  });

  const encoder = new TextEncoder();
  let socket = null;
  let writable = false;
  let disposed = false;

  const send = (data) => {
    if (socket && writable && socket.readyState === WebSocket.OPEN) socket.send(data);
  };
  term.onData((d) => send(encoder.encode(d)));
  term.onBinary((d) => send(Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff)));

  function sendResize() {
    if (socket && writable && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
    }
  }
  term.onResize(sendResize);

  function doFit() {
    if (disposed || !container.isConnected) return;
    try {
      fit.fit();
    } catch {
      // not laid out yet
    }
  }
  let frame = 0;
  const onResize = () => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(doFit);
  };
  window.addEventListener("resize", onResize);
  const observer = typeof ResizeObserver === "function" ? new ResizeObserver(onResize) : null;
  if (observer) observer.observe(container);
  doFit();

  function setMode(w) {
    writable = w;
    term.options.disableStdin = !w;
    modeEl.textContent = w ? "writable" : "read-only";
    modeEl.className = `badge ${w ? "state-running" : "state-paused"}`;
  }

  function connect() {
    if (disposed) return;
    reconnect.hidden = true;
    status.textContent = "connecting…";
    viewers.textContent = "—";
    modeEl.textContent = "—";
    modeEl.className = "badge";
    const path = vmId ? `/api/v1/admin/vms/${seg(vmId)}/console` : "/api/v1/host/console";
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${proto}//${location.host}${path}?csrf=${encodeURIComponent(session.csrf || "")}`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      closed("the connection could not be opened", false);
      return;
    }
    ws.binaryType = "arraybuffer";
    socket = ws;
    let opened = false;
    let reason = null;
    ws.addEventListener("open", () => {
      opened = true;
      status.textContent = "connected";
    });
    ws.addEventListener("message", (ev) => {
      if (socket !== ws) return;
      if (typeof ev.data !== "string") {
        term.write(new Uint8Array(ev.data));
        return;
      }
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!msg || typeof msg !== "object") return;
      if (msg.type === "hello") {
        setMode(!!msg.writable);
        if (Number.isFinite(msg.viewers)) viewers.textContent = String(msg.viewers);
        doFit();
        sendResize();
        const a = document.activeElement;
        if (msg.writable && (!a || a === document.body || a.tagName === "H1")) term.focus();
      } else if (msg.type === "viewers") {
        if (Number.isFinite(msg.count)) viewers.textContent = String(msg.count);
      } else if (msg.type === "closed") {
        reason = typeof msg.reason === "string" && msg.reason ? msg.reason : null;
        status.textContent = reason ? `closing: ${reason}` : "closing…";
      }
    });
    ws.addEventListener("close", (ev) => {
      if (socket !== ws) return;
      socket = null;
      closed(reason || ev.reason || (opened ? "the connection ended" : "the console could not be reached"), opened);
    });
  }

  async function closed(why, wasOpen) {
    if (disposed) return;
    setMode(false);
    modeEl.textContent = "closed";
    modeEl.className = "badge state-stopped";
    status.textContent = `closed: ${why}`;
    reconnect.hidden = false;
    if (!wasOpen) {
      // A refused upgrade (401, 404, 409) says nothing to the page: ask the API what is
      // wrong (a 401 goes to the login page).
      try {
        await get("/api/v1/session");
        const hv = await get(vmId ? `/api/v1/admin/vms/${seg(vmId)}` : "/api/v1/host");
        if (!alive() || disposed || socket) return;
        if (hv && hv.state !== "running" && hv.state !== "booting") {
          status.textContent = `closed: the VM is ${hv.state}; the console works while it runs`;
        } else {
          status.textContent = `closed: ${why} (it may have too many viewers; try again in a moment)`;
        }
      } catch (e) {
        if (alive() && !disposed) showError(e);
      }
    }
  }

  reconnect.addEventListener("click", () => {
    connect();
    term.focus();
  });

  connect();

  return () => {
    disposed = true;
    window.removeEventListener("resize", onResize);
    if (observer) observer.disconnect();
    cancelAnimationFrame(frame);
    if (socket) {
      const ws = socket;
      socket = null;
      ws.close(1000, "page left");
    }
    term.dispose();
  };
}
