// The console's only way to the server: the public HTTP API (/v1), as any client calls it.
//
// Credentials: a pasted token lives in `pastedToken` below, a variable of this module,
// so it lasts as long as the tab and is never written anywhere (no web storage, no
// cookie). Without one, the browser sends the HttpOnly `kms_session`
// cookie of a single sign-on login by itself; fetch adds the `Origin` header the server
// checks on cookie-authenticated changes.

let pastedToken = null;

/** How the console is signed in: `null`, `"token"` or `"session"`. */
let mode = null;
/** The `GET /v1/me` answer in session mode. */
let sessionInfo = null;

/** An error answer of the API, carrying its `error` body. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = body && typeof body.error === "object" && body.error !== null ? body.error : null;
    let message;
    if (error && typeof error.message === "string") {
      message = error.message;
    } else if (body && typeof body.error === "string") {
      // The OAuth endpoints answer {"error": "...", "error_description": "..."}.
      message = body.error_description || body.error;
    } else {
      message = `the server answered ${status}`;
    }
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = error ? error.code : typeof body?.error === "string" ? body.error : "";
    this.requestId = error ? error.request_id || "" : "";
  }
}

/** Signs in with a pasted token (kept in memory for this tab only). */
export function useToken(token) {
  pastedToken = token;
  mode = "token";
  sessionInfo = null;
}

/** Signs in with the session cookie, given the `GET /v1/me` answer. */
export function useSession(me) {
  pastedToken = null;
  mode = "session";
  sessionInfo = me;
}

/** Forgets every credential the console holds. */
export function forget() {
  pastedToken = null;
  mode = null;
  sessionInfo = null;
}

/** `null`, `"token"` or `"session"`. */
export function signedIn() {
  return mode;
}

/** The `GET /v1/me` answer of a session sign-in, else `null`. */
export function session() {
  return sessionInfo;
}

/** `?a=1&b=2` of the defined, non-empty values of `params` (or `""`). */
export function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") {
      q.set(key, String(value));
    }
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** Encodes one path segment. */
export function seg(value) {
  return encodeURIComponent(value);
}

/**
 * Calls the API: `method` on `path` (absolute, `/v1/...`) with an optional JSON `body`.
 * Resolves to the parsed JSON answer (or `null` for 204); rejects with an ApiError
 * carrying the API's own message, or with an ApiError of status 0 when the server
 * cannot be reached.
 */
export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (pastedToken !== null) {
    headers.Authorization = `Bearer ${pastedToken}`;
  }
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, { error: { code: "network", message: "the server could not be reached; check that kms is running" } });
  }
  if (response.status === 204) {
    return null;
  }
  const text = await response.text();
  let parsed = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = null;
    }
  }
  if (!response.ok) {
    const err = new ApiError(response.status, parsed);
    if (response.status === 401 && mode !== null) {
      // The credential stopped working (revoked, expired, session ended): the frame
      // signs the console out and says why.
      window.dispatchEvent(new CustomEvent("kms:unauthenticated", { detail: err.message }));
    }
    throw err;
  }
  return parsed;
}

/** GET shorthand. */
export function get(path) {
  return call("GET", path);
}

/**
 * Every item of a paginated listing, following `next_cursor` (at most `maxPages` pages
 * of 200): for the scope tree and the role graph, which need the whole set.
 */
export async function all(path, maxPages = 50) {
  const items = [];
  let cursor = null;
  for (let i = 0; i < maxPages; i += 1) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await get(`${path}${sep}${query({ limit: 200, cursor }).slice(1)}`);
    items.push(...(page.items || []));
    cursor = page.next_cursor;
    if (!cursor) {
      break;
    }
  }
  return items;
}
