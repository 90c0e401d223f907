// The single-page app: history routing over the server's app shell, the navigation bar with
// the live notification badge, and one mounted page at a time (each page cleans up after itself).

import { api, currentUser, onUserChange, knownUser } from "./api.js";
import { h, icon, errorBox, spinner } from "./dom.js";
import { feedPage as feedView, videoPage } from "./feeds.js";
import { authPage, profilePage, tagPage, soundPage, discoverPage, inboxPage } from "./pages.js";

const ROUTES = [
  [/^\/$/, (v) => feedView(v, "for-you")],
  [/^\/following\/?$/, (v) => feedView(v, "following")],
  [/^\/trending\/?$/, (v) => feedView(v, "trending")],
  [/^\/login\/?$/, (v) => authPage(v, "login")],
  [/^\/signup\/?$/, (v) => authPage(v, "signup")],
  [/^\/u\/([^/]+)\/?$/, (v, m) => profilePage(v, decodeURIComponent(m[1]))],
  [/^\/tag\/([^/]+)\/?$/, (v, m) => tagPage(v, decodeURIComponent(m[1]))],
  [/^\/sound\/([^/]+)\/?$/, (v, m) => soundPage(v, decodeURIComponent(m[1]))],
  [/^\/discover\/?$/, (v) => discoverPage(v)],
  [/^\/inbox\/?$/, (v) => inboxPage(v, setBadge)],
  [/^\/upload\/?$/, async (v) => (await import("./upload.js")).uploadPage(v)],
  [/^\/analytics\/?$/, async (v) => (await import("./analytics.js")).analyticsPage(v, null)],
  [/^\/analytics\/([^/]+)\/?$/, async (v, m) => (await import("./analytics.js")).analyticsPage(v, decodeURIComponent(m[1]))],
  [/^\/video\/([^/]+)\/?$/, (v, m) => videoPage(v, decodeURIComponent(m[1]))],
];

const view = document.getElementById("view");
let cleanup = null;
let generation = 0;

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState({}, "", path);
  else history.pushState({}, "", path);
  route();
}

async function route() {
  const mine = ++generation;
  if (cleanup) {
    try { cleanup(); } catch { /* a page failing to clean up must not block the next one */ }
    cleanup = null;
  }
  document.querySelectorAll(".sheet-backdrop, .player-overlay").forEach((node) => node.remove());
  const path = location.pathname;
  highlightNav(path);
  view.replaceChildren(spinner());
  view.className = "view";
  for (const [pattern, render] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    try {
      const result = await render(view, match);
      if (mine !== generation) { if (typeof result === "function") result(); return; }
      cleanup = typeof result === "function" ? result : null;
    } catch (error) {
      if (mine !== generation) return;
      view.replaceChildren(errorBox(error, () => route()));
    }
    return;
  }
  document.title = "Not found · clipfeed";
  view.replaceChildren(h("div", { class: "page narrow" }, h("h1", { text: "Page not found" }),
    h("p", {}, h("a", { href: "/", "data-link": true, text: "Back to the feed" }))));
}

// In-app links: anything marked data-link (and same-origin) is routed without a reload.
document.addEventListener("click", (event) => {
  const link = event.target.closest && event.target.closest("a[data-link]");
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin) return;
  event.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) navigate(url.pathname + url.search);
});
window.addEventListener("popstate", route);

// --- navigation and the live badge ----------------------------------------------------------

const badge = h("span", { class: "badge", hidden: true, "aria-live": "polite" });
const profileLink = h("a", { href: "/login", "data-link": true, class: "nav-item", "aria-label": "Log in" },
  icon("user"), h("span", { class: "nav-label", text: "Log in" }));
const nav = document.getElementById("nav");
nav.append(
  h("a", { href: "/", "data-link": true, class: "nav-item", "aria-label": "Home" }, icon("home"), h("span", { class: "nav-label", text: "Home" })),
  h("a", { href: "/discover", "data-link": true, class: "nav-item", "aria-label": "Discover" }, icon("search"), h("span", { class: "nav-label", text: "Discover" })),
  h("a", { href: "/upload", "data-link": true, class: "nav-item upload", "aria-label": "Upload" }, icon("plus"), h("span", { class: "nav-label", text: "Upload" })),
  h("a", { href: "/inbox", "data-link": true, class: "nav-item inbox", "aria-label": "Inbox" }, icon("bell"), badge, h("span", { class: "nav-label", text: "Inbox" })),
  profileLink,
);

function highlightNav(path) {
  for (const link of nav.querySelectorAll("a")) {
    const target = new URL(link.href).pathname;
    const active = target === "/" ? ["/", "/following", "/trending"].includes(path) : path.startsWith(target);
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

let unread = 0;
function setBadge(count) {
  unread = Math.max(0, count);
  badge.textContent = unread > 99 ? "99+" : String(unread);
  badge.hidden = unread === 0;
  badge.setAttribute("aria-label", `${unread} unread notifications`);
}

let stream = null;
async function startBadge(user) {
  if (stream) { stream.close(); stream = null; }
  setBadge(0);
  if (!user) return;
  try {
    const page = await api("notifications", { query: { limit: 1 } });
    setBadge(page.unread_count || 0);
  } catch { /* the badge is a nicety; the inbox page shows errors */ }
  stream = new EventSource("/api/v1/notifications/stream", { withCredentials: true });
  stream.addEventListener("notification", () => {
    if (location.pathname !== "/inbox") setBadge(unread + 1);
    window.dispatchEvent(new CustomEvent("clipfeed:notification"));
  });
}

onUserChange((user) => {
  const label = profileLink.querySelector(".nav-label");
  if (user) {
    profileLink.href = `/u/${encodeURIComponent(user.handle)}`;
    profileLink.setAttribute("aria-label", "Your profile");
    label.textContent = "Profile";
  } else {
    profileLink.href = "/login";
    profileLink.setAttribute("aria-label", "Log in");
    label.textContent = "Log in";
  }
  highlightNav(location.pathname);
  startBadge(user);
});

window.addEventListener("pageshow", () => document.documentElement.classList.add("ready"));
currentUser().catch(() => null).finally(() => route());
export { knownUser };
