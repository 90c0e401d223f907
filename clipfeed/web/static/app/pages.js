// Sign up / log in, profiles, hashtag and sound pages, Discover (search as you type, trending
// hashtags and sounds) and the notifications inbox.

import { api, currentUser, knownUser, logout, forgetProfile } from "./api.js";
import { h, formatCount, timeAgo, toast, errorBox, spinner, go } from "./dom.js";
import { videoGrid } from "./feeds.js";

function safeNext() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  return next.startsWith("/") && !next.startsWith("//") ? next : "/";
}

export async function authPage(view, mode) {
  const signup = mode === "signup";
  document.title = `${signup ? "Sign up" : "Log in"} · clipfeed`;
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const handle = h("input", { id: "auth-handle", name: "handle", required: true, autocomplete: "username",
    autocapitalize: "none", spellcheck: "false", minlength: "3", maxlength: "30" });
  const password = h("input", { id: "auth-password", name: "password", type: "password", required: true,
    autocomplete: signup ? "new-password" : "current-password", minlength: signup ? "8" : null });
  const fields = [
    h("label", { for: "auth-handle", text: "Handle" }), handle,
    h("label", { for: "auth-password", text: "Password" }), password,
  ];
  let displayName = null;
  let birthDate = null;
  let topics = null;
  if (signup) {
    displayName = h("input", { id: "auth-name", name: "display_name", maxlength: "50", autocomplete: "name" });
    birthDate = h("input", { id: "auth-birth", name: "birth_date", type: "date" });
    topics = topicPicker();
    fields.push(h("label", { for: "auth-name", text: "Display name (optional)" }), displayName,
      h("label", { for: "auth-birth", text: "Birth date (optional)" }), birthDate, topics.box);
  }
  const submit = h("button", { type: "submit", class: "btn primary wide", text: signup ? "Create account" : "Log in" });
  const form = h("form", { class: "auth-form", novalidate: false }, ...fields, error, submit);
  const other = signup
    ? h("p", {}, "Already have an account? ", h("a", { href: `/login${location.search}`, "data-link": true, text: "Log in" }))
    : h("p", {}, "New here? ", h("a", { href: `/signup${location.search}`, "data-link": true, text: "Sign up" }));
  const me = knownUser();
  const signedIn = me ? h("p", { class: "muted" }, `Signed in as @${me.handle}. `,
    h("button", { type: "button", class: "link-btn", text: "Log out", onclick: async () => { await logout(); go("/login"); } })) : null;
  view.replaceChildren(h("div", { class: "page narrow" }, h("h1", { text: signup ? "Create your account" : "Log in to clipfeed" }),
    signedIn, form, other));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    const body = { handle: handle.value.trim(), password: password.value };
    if (signup) {
      if (displayName.value.trim()) body.display_name = displayName.value.trim();
      if (birthDate.value) body.birth_date = birthDate.value;
      const chosen = topics.chosen();
      if (chosen.length) body.interests = chosen;
    }
    try {
      await api(signup ? "auth/register" : "auth/login", { method: "POST", body });
      await currentUser({ refresh: true });
      go(safeNext(), { replace: true });
    } catch (failure) {
      error.textContent = failure.message;
      error.hidden = false;
      submit.disabled = false;
    }
  });
  handle.focus();
  return null;
}

// Topics a newcomer's For You starts from (until their swipes say more): the trending hashtags,
// or these when nothing trends yet. At most MAX_TOPICS, as the server allows.
const DEFAULT_TOPICS = ["comedy", "food", "music", "dance", "fitness", "pets", "art", "travel", "tech", "sports",
  "fashion", "diy"];
const MAX_TOPICS = 10;

function topicPicker() {
  const chosen = new Set();
  const list = h("ul", { class: "chips topic-chips" });
  const box = h("fieldset", { class: "topics" }, h("legend", { text: "Topics you like (optional)" }), list);
  function paint(tags) {
    list.replaceChildren(...tags.map((tag) => {
      const chip = h("button", { type: "button", class: "chip", "aria-pressed": "false", "data-topic": tag, text: `#${tag}` });
      chip.addEventListener("click", () => {
        if (chosen.has(tag)) chosen.delete(tag);
        else if (chosen.size < MAX_TOPICS) chosen.add(tag);
        chip.setAttribute("aria-pressed", chosen.has(tag) ? "true" : "false");
      });
      return h("li", {}, chip);
    }));
  }
  paint(DEFAULT_TOPICS);
  api("trending/hashtags", { query: { limit: 12 } }).then((page) => {
    if (page.items.length >= 6 && !chosen.size) paint(page.items.map((t) => t.tag));
  }).catch(() => {});  // the defaults stay
  return { box, chosen: () => [...chosen] };
}

async function pagedList(path, render, { query = {}, emptyText } = {}) {
  const box = h("div", { class: "paged" });
  let cursor = null;
  const more = h("button", { type: "button", class: "btn more", text: "Load more", hidden: true });
  const items = [];
  async function load() {
    more.disabled = true;
    try {
      const page = await api(path, { query: { ...query, limit: 24, cursor } });
      items.push(...page.items);
      cursor = page.next_cursor;
      box.replaceChildren(render(items, page), more);
      more.hidden = !cursor;
      return page;
    } catch (error) {
      box.replaceChildren(errorBox(error, load));
      return null;
    } finally {
      more.disabled = false;
    }
  }
  more.addEventListener("click", load);
  const first = await load();
  if (first && !items.length && emptyText) box.replaceChildren(h("p", { class: "muted", text: emptyText }));
  return { box, first };
}

export async function profilePage(view, handle) {
  const user = await api(`users/by-handle/${encodeURIComponent(handle.replace(/^@/, ""))}`);
  document.title = `@${user.handle} · clipfeed`;
  const followers = h("strong", { text: formatCount(user.follower_count) });
  const followButton = user.is_me ? null : h("button", { type: "button", class: "btn primary follow-btn" });
  function paintFollow() {
    if (!followButton) return;
    followButton.textContent = user.is_following ? "Following" : "Follow";
    followButton.setAttribute("aria-pressed", user.is_following ? "true" : "false");
    followButton.classList.toggle("primary", !user.is_following);
  }
  paintFollow();
  if (followButton) {
    followButton.addEventListener("click", async () => {
      if (!knownUser()) { go(`/login?next=${encodeURIComponent(location.pathname)}`); return; }
      followButton.disabled = true;
      const following = !user.is_following;
      try {
        await api(`users/${encodeURIComponent(user.id)}/follow`, { method: following ? "POST" : "DELETE" });
        user.is_following = following;
        user.follower_count += following ? 1 : -1;
        followers.textContent = formatCount(user.follower_count);
        forgetProfile(user.id);
        paintFollow();
      } catch (error) {
        toast(error.message, { error: true });
      } finally {
        followButton.disabled = false;
      }
    });
  }
  const mine = user.is_me ? h("div", { class: "row" },
    h("a", { class: "btn", href: "/analytics", "data-link": true, text: "Analytics" }),
    h("button", { type: "button", class: "btn", text: "Log out", onclick: async () => { await logout(); go("/"); } })) : null;
  const header = h("header", { class: "profile-head" },
    h("div", { class: "avatar big", "aria-hidden": "true", text: (user.display_name || user.handle).slice(0, 1).toUpperCase() }),
    h("h1", { class: "profile-name", text: user.display_name || user.handle }),
    h("p", { class: "muted handle-line", text: `@${user.handle}` }),
    h("ul", { class: "counts", "aria-label": "Counts" },
      h("li", {}, h("strong", { text: formatCount(user.following_count) }), " Following"),
      h("li", {}, followers, " Followers"),
      h("li", {}, h("strong", { text: formatCount(user.video_count) }), " Videos")),
    user.bio ? h("p", { class: "bio", text: user.bio }) : null,
    followButton, mine);
  const page = h("div", { class: "page" }, header, spinner());
  view.replaceChildren(page);
  const { box } = await pagedList(`users/${encodeURIComponent(user.id)}/videos`,
    (items) => videoGrid(items, { owner: user.is_me, emptyText: user.is_me ? "Upload your first video!" : "No videos yet." }));
  page.replaceChildren(header, box);
  return null;
}

export async function tagPage(view, tag) {
  document.title = `#${tag} · clipfeed`;
  const title = h("h1", { text: `#${tag}` });
  const stats = h("p", { class: "muted" });
  const page = h("div", { class: "page" }, title, stats, spinner());
  view.replaceChildren(page);
  const { box, first } = await pagedList(`hashtags/${encodeURIComponent(tag)}/videos`, (items) => videoGrid(items));
  if (first) stats.textContent = `${formatCount(first.video_count)} videos`;
  page.replaceChildren(title, stats, box);
  return null;
}

export async function soundPage(view, soundId) {
  const sound = await api(`sounds/${encodeURIComponent(soundId)}`);
  document.title = `${sound.title || "Sound"} · clipfeed`;
  const head = h("header", { class: "sound-head" },
    h("h1", { text: sound.title || "Original sound" }),
    h("p", { class: "muted" }, sound.owner ? h("a", { href: `/u/${encodeURIComponent(sound.owner.handle)}`, "data-link": true,
      text: `@${sound.owner.handle}` }) : null, ` · ${formatCount(sound.use_count)} videos`),
    sound.url ? h("audio", { controls: true, preload: "none", src: sound.url, "aria-label": "Play the sound" }) : null);
  const page = h("div", { class: "page" }, head, spinner());
  view.replaceChildren(page);
  const { box } = await pagedList(`sounds/${encodeURIComponent(soundId)}/videos`, (items) => videoGrid(items));
  page.replaceChildren(head, box);
  return null;
}

export async function discoverPage(view) {
  document.title = "Discover · clipfeed";
  const initial = new URLSearchParams(location.search).get("q") || "";
  const input = h("input", { type: "search", id: "search", value: initial, placeholder: "Search videos and people",
    "aria-label": "Search videos and people", autocomplete: "off", enterkeyhint: "search" });
  const results = h("div", { class: "search-results", "aria-live": "polite" });
  const trending = h("div", { class: "trending" });
  view.replaceChildren(h("div", { class: "page" }, h("h1", { class: "visually-hidden", text: "Discover" }),
    h("form", { role: "search", class: "search-form", onsubmit: (e) => e.preventDefault() }, input), results, trending));

  let timer = 0;
  let controller = null;
  async function search(q) {
    if (controller) controller.abort();
    history.replaceState({}, "", q ? `/discover?q=${encodeURIComponent(q)}` : "/discover");
    if (!q) { results.replaceChildren(); trending.hidden = false; return; }
    trending.hidden = true;
    controller = new AbortController();
    const signal = controller.signal;
    try {
      const [users, videos] = await Promise.all([
        api("search/users", { query: { q, limit: 6 }, signal }),
        api("search/videos", { query: { q, limit: 24 }, signal }),
      ]);
      results.replaceChildren(
        h("h2", { class: "section-title", text: "People" }),
        users.items.length ? h("ul", { class: "people" }, users.items.map((u) => h("li", {},
          h("a", { href: `/u/${encodeURIComponent(u.handle)}`, "data-link": true, class: "person" },
            h("span", { class: "avatar", "aria-hidden": "true", text: (u.display_name || u.handle).slice(0, 1).toUpperCase() }),
            h("span", {}, h("strong", { text: u.display_name || u.handle }), h("span", { class: "muted", text: ` @${u.handle}` })))))) :
          h("p", { class: "muted", text: "No people found." }),
        h("h2", { class: "section-title", text: "Videos" }),
        videoGrid(videos.items, { emptyText: "No videos found." }));
    } catch (error) {
      if (error.name !== "AbortError") results.replaceChildren(errorBox(error, () => search(q)));
    }
  }
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => search(input.value.trim()), 250);  // debounced: results as you type
  });

  (async () => {
    try {
      const [tags, sounds] = await Promise.all([api("trending/hashtags", { query: { limit: 12 } }),
        api("trending/sounds", { query: { limit: 8 } })]);
      trending.replaceChildren(
        h("h2", { class: "section-title", text: "Trending hashtags" }),
        tags.items.length ? h("ul", { class: "chips" }, tags.items.map((t) => h("li", {},
          h("a", { class: "chip", href: `/tag/${encodeURIComponent(t.tag)}`, "data-link": true, text: `#${t.tag}` })))) :
          h("p", { class: "muted", text: "Nothing trending yet." }),
        h("h2", { class: "section-title", text: "Trending sounds" }),
        sounds.items.length ? h("ul", { class: "sound-list" }, sounds.items.map((s) => h("li", {},
          h("a", { href: `/sound/${encodeURIComponent(s.id)}`, "data-link": true, text: s.title || "Original sound" }),
          h("span", { class: "muted", text: ` · ${formatCount(s.use_count)} videos` })))) :
          h("p", { class: "muted", text: "No sounds yet." }));
    } catch (error) {
      trending.replaceChildren(errorBox(error));
    }
  })();
  if (initial) search(initial);
  input.focus();
  return () => { clearTimeout(timer); if (controller) controller.abort(); };
}

const KIND_TEXT = {
  like: "liked your video", comment: "commented", reply: "replied to your comment", follow: "started following you",
  mention: "mentioned you", video_ready: "Your video is ready", video_rejected: "Your video was rejected",
};

export async function inboxPage(view, setBadge) {
  document.title = "Inbox · clipfeed";
  if (!knownUser()) {
    view.replaceChildren(h("div", { class: "page narrow" }, h("h1", { text: "Inbox" }),
      h("p", {}, h("a", { href: "/login?next=/inbox", "data-link": true, text: "Log in" }), " to see your notifications.")));
    return null;
  }
  const list = h("ol", { class: "notifications", "aria-label": "Notifications" });
  view.replaceChildren(h("div", { class: "page narrow" }, h("h1", { text: "Inbox" }), list));
  function row(n) {
    const actor = n.actor ? h("a", { href: `/u/${encodeURIComponent(n.actor.handle)}`, "data-link": true, text: `@${n.actor.handle}` }) : null;
    const target = n.video_id ? h("a", { href: `/video/${encodeURIComponent(n.video_id)}`, "data-link": true, class: "muted", text: " · view" }) : null;
    return h("li", { class: `notification${n.read ? "" : " unread"}` },
      actor, actor ? " " : "", KIND_TEXT[n.kind] || n.kind, n.text ? h("q", { text: n.text }) : null, target,
      h("span", { class: "muted when", text: ` ${timeAgo(n.created_at)}` }));
  }
  async function load() {
    try {
      const page = await api("notifications", { query: { limit: 50 } });
      list.replaceChildren(...page.items.map(row));
      if (!page.items.length) list.append(h("li", { class: "muted", text: "No notifications yet." }));
      if (page.unread_count) await api("notifications/read", { method: "POST", body: { all: true } });
      setBadge(0);
    } catch (error) {
      list.replaceChildren(errorBox(error, load));
    }
  }
  await load();
  const onLive = () => load();
  window.addEventListener("clipfeed:notification", onLive);
  return () => window.removeEventListener("clipfeed:notification", onLive);
}
