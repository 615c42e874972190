// History API routing: the server answers every non-API path with index.html, so the
// dashboard's pages have plain paths (/keys, /admin/console/<id>, ...).

let renderPage = () => {};
let rendered = null; // the path + query last rendered

function render(opts) {
  rendered = location.pathname + location.search;
  renderPage(opts);
}

/** Where to go after logging in, and a sentence for the next page's notice banner. */
export const pending = { returnTo: null, notice: null };

export function setRenderer(fn) {
  renderPage = fn;
}

/** Goes to a dashboard path without reloading the page. */
export function navigate(path, { replace = false } = {}) {
  const url = new URL(path, location.origin);
  if (url.pathname + url.search === location.pathname + location.search && !replace) {
    render({ focus: true });
    return;
  }
  if (replace) history.replaceState(null, "", url.pathname + url.search);
  else history.pushState(null, "", url.pathname + url.search);
  render({ focus: true });
}

/** Renders the current path again (at start, or after the session changed). */
export function rerender(opts = {}) {
  render(opts);
}

/** Clicks on `<a data-route>` stay in the page; everything else is a normal link. */
export function interceptLinks() {
  document.addEventListener("click", (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) {
      return;
    }
    const a = e.target instanceof Element ? e.target.closest("a[data-route]") : null;
    if (!a || a.target || a.hasAttribute("download")) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin) return;
    e.preventDefault();
    navigate(url.pathname + url.search);
  });
  window.addEventListener("popstate", () => {
    // A fragment link (the skip link) changes only the hash: nothing to render.
    if (location.pathname + location.search === rendered) return;
    render({ focus: true });
  });
}
