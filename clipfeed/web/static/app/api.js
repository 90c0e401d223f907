// The one door to the JSON API: same-origin fetch with the session cookie, errors turned into
// ApiError carrying the server's {"error": {code, message}} so pages can show the reason.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(path, { method = "GET", body, signal, query } = {}) {
  let url = path.startsWith("/") ? path : `/api/v1/${path}`;
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== "") params.set(key, value);
    }
    const text = params.toString();
    if (text) url += (url.includes("?") ? "&" : "?") + text;
  }
  const init = { method, credentials: "same-origin", signal, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network_error", "Can't reach clipfeed. Check your connection and try again.");
  }
  if (response.status === 204) return null;
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const error = (payload && payload.error) || {};
    throw new ApiError(response.status, error.code || "http_error",
      error.message || `Something went wrong (HTTP ${response.status}).`);
  }
  return payload;
}

// The signed-in person (or null), loaded once per page load and refreshed on login/logout.
let me = undefined;
const listeners = new Set();

export async function currentUser({ refresh = false } = {}) {
  if (me !== undefined && !refresh) return me;
  const shell = document.getElementById("app");
  if (!refresh && shell && shell.dataset.session === "0") {
    me = null; // no session cookie came with the page: anonymous, no need to ask
    listeners.forEach((fn) => fn(me));
    return me;
  }
  try {
    me = await api("me");
  } catch (error) {
    if (error.status !== 401) throw error;
    me = null;
  }
  listeners.forEach((fn) => fn(me));
  return me;
}

export function knownUser() {
  return me || null;
}

export function onUserChange(fn) {
  listeners.add(fn);
}

export async function logout() {
  await api("auth/logout", { method: "POST" }).catch(() => null);
  me = null;
  listeners.forEach((fn) => fn(me));
}

// Profiles by id, cached for the page's life: feed items carry only owner_id.
const profiles = new Map();

export function profile(userId, { refresh = false } = {}) {
  if (refresh || !profiles.has(userId)) {
    const pending = api(`users/${encodeURIComponent(userId)}/profile`).catch((error) => {
      profiles.delete(userId);
      throw error;
    });
    profiles.set(userId, pending);
  }
  return profiles.get(userId);
}

export function forgetProfile(userId) {
  profiles.delete(userId);
}

// A feed page. For You falls back to Trending when it is missing or failing (404, 5xx,
// network): that is the product's degradation rule, and the client follows it too. Once it
// has fallen back, later pages come from Trending too (their cursors carry a "t:" prefix).
export async function feedPage(kind, cursor, limit = 10) {
  if (kind === "for-you") {
    const fellBack = Boolean(cursor) && String(cursor).startsWith("t:");
    try {
      if (!fellBack) {
        const page = await api("feed/for-you", { query: { limit, cursor } });
        // An empty first page (a tiny catalog, or everything already seen) shows Trending too.
        if (cursor || page.items.length) return { ...page, source: "for-you" };
      }
    } catch (error) {
      // 404 (not deployed), 5xx, network, and 401 (an anonymous visitor, should the server
      // want a sign-in): all degrade to Trending rather than an empty screen.
      if (error.name === "AbortError" || error.status === 400 || error.status === 422) throw error;
      cursor = null;
    }
    {
      const page = await api("feed/trending", { query: { limit, cursor: fellBack ? cursor.slice(2) : null } });
      return { ...page, next_cursor: page.next_cursor ? `t:${page.next_cursor}` : null, source: "trending" };
    }
  }
  const page = await api(`feed/${kind}`, { query: { limit, cursor } });
  return { ...page, source: kind };
}
