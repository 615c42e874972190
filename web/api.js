// The one way the dashboard talks to roost: same-origin fetch with the session cookie,
// the CSRF token on every non-GET request, and errors turned into sentences.

/** The signed-in user and the CSRF token, from `/api/v1/session`. */
export const session = { user: null, csrf: null };

export function setSession(body) {
  session.user = body && body.user ? body.user : null;
  session.csrf = body && body.csrf ? body.csrf : null;
}

export function isAdmin() {
  return !!session.user && session.user.role === "admin";
}

/** An API failure: `message` is always a sentence fit to show. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0: the server could not be reached
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

let onUnauthorized = () => {};

/** Called with the error when any request (but those that expect it) answers 401. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

const GENERIC = {
  400: "The request was not understood.",
  401: "You are not logged in (or your session has ended).",
  403: "You are not allowed to do that.",
  404: "Not found.",
  408: "The server took too long to answer. Try again.",
  409: "That conflicts with the current state. Reload and try again.",
  413: "That is too large.",
  422: "Some of the input is not valid.",
  429: "Too many attempts. Wait a moment and try again.",
  502: "The server is not reachable right now (bad gateway). Try again in a moment.",
  503: "The service is unavailable right now. Try again in a moment.",
  504: "The server took too long to answer. Try again in a moment.",
};

// The API names the field first ("ssh_public_key: ..."): say it in words.
const FIELDS = {
  ssh_public_key: "SSH public key",
  public_key: "Public key",
  console_password: "Console password",
  username: "Username",
  password: "Password",
  new_password: "New password",
  current_password: "Current password",
  email: "Email",
  name: "Domain name",
};

function sentence(s) {
  let t = String(s).trim();
  if (!t) return t;
  const m = /^([a-z_]+): (.*)$/s.exec(t);
  if (m && FIELDS[m[1]]) t = `${FIELDS[m[1]]}: ${m[2]}`;
  return t[0].toUpperCase() + t.slice(1) + (/[.!?)]$/.test(t) ? "" : ".");
}

/**
 * `api("GET", "/api/v1/host")` → the parsed JSON body (null for 204).
 * Throws ApiError. `opts.expect401`: a 401 is the caller's business (login, session probe).
 */
export async function api(method, path, body, opts = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET" && method !== "HEAD" && session.csrf) {
    headers["X-CSRF-Token"] = session.csrf;
  }
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(
      0,
      "network",
      navigator.onLine === false
        ? "You seem to be offline. Check your connection and try again."
        : "Could not reach the server. Check your connection and try again.",
    );
  }
  let data = null;
  let text = "";
  try {
    text = await res.text();
  } catch {
    // the body broke off; the status still tells enough
  }
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (res.ok) return res.status === 204 ? null : data;

  const retry = Number.parseInt(res.headers.get("Retry-After") || "", 10);
  const retryAfter = Number.isFinite(retry) ? retry : null;
  let message =
    data && typeof data.message === "string" && data.message
      ? sentence(data.message)
      : GENERIC[res.status] ||
        (res.status >= 500
          ? `The server had a problem (HTTP ${res.status}). Try again in a moment.`
          : `The request failed (HTTP ${res.status}).`);
  if (retryAfter && (res.status === 429 || res.status === 503)) {
    message += ` You can try again in ${retryAfter} s.`;
  }
  const code = data && typeof data.error === "string" ? data.error : `http_${res.status}`;
  const err = new ApiError(res.status, code, message, retryAfter);
  if (res.status === 401 && !opts.expect401) {
    err.handled = true;
    onUnauthorized(err);
  }
  throw err;
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body, opts) => api("POST", path, body, opts);
export const del = (path, opts) => api("DELETE", path, undefined, opts);

/** Percent-encodes one path segment. */
export const seg = (s) => encodeURIComponent(s);
