// Feed pages (For You, Following, Trending), a single video, and the player overlay that grids
// open: all of them are a Pager.

import { api, feedPage as loadFeed, knownUser } from "./api.js";
import { h, icon } from "./dom.js";
import { Pager } from "./pager.js";

const TABS = [["for-you", "For You", "/"], ["following", "Following", "/following"], ["trending", "Trending", "/trending"]];

export async function feedPage(view, kind) {
  document.title = "clipfeed";
  view.className = "view feed-view";
  const tabs = h("nav", { class: "feed-tabs", "aria-label": "Feeds" },
    TABS.map(([key, label, href]) => h("a", { href, "data-link": true, class: "feed-tab",
      "aria-current": key === kind ? "page" : null, text: label })));
  if (kind === "following" && !knownUser()) {
    view.replaceChildren(tabs, h("div", { class: "empty" }, h("p", { text: "Log in to see videos from people you follow." }),
      h("a", { class: "btn primary", href: "/login?next=/following", "data-link": true, text: "Log in" })));
    return null;
  }
  const status = h("p", { class: "feed-source visually-hidden", "aria-live": "polite" });
  const pager = new Pager({
    label: TABS.find(([key]) => key === kind)[1],
    emptyText: kind === "following" ? "Follow creators to fill this feed." : "No videos yet. Upload the first one!",
    source: async (cursor) => {
      const page = await loadFeed(kind, cursor);
      status.textContent = page.source !== kind ? "Showing trending videos" : "";
      view.dataset.source = page.source;
      return page;
    },
  });
  const live = h("nav", { class: "live-now", "aria-label": "Live now", hidden: true });
  view.replaceChildren(pager.root, tabs, live, status);
  showLiveNow(live); // not awaited: the feed never waits for it
  await pager.start();
  return () => pager.destroy();
}

// Streams on air, as a row of avatars under the tabs; each opens the live page (player + chat).
async function showLiveNow(row) {
  let streams;
  try {
    streams = (await api("live", { query: { limit: 10 } })).items;
  } catch {
    return; // live is extra: the feed stays as it is
  }
  if (!streams.length) return;
  row.replaceChildren(...streams.map((stream) => {
    const handle = stream.owner ? stream.owner.handle : "someone";
    return h("a", { class: "live-chip", href: `/live/${encodeURIComponent(stream.id)}`,
      "aria-label": `@${handle} is live${stream.title ? `: ${stream.title}` : ""}` },
      h("span", { class: "avatar", "aria-hidden": "true", text: handle.slice(0, 1).toUpperCase() }),
      h("span", { class: "live-badge", "aria-hidden": "true", text: "LIVE" }));
  }));
  row.hidden = false;
}

export async function videoPage(view, videoId) {
  view.className = "view feed-view";
  const video = await api(`videos/${encodeURIComponent(videoId)}`);
  if (!video.urls || !video.urls.hls) {
    view.replaceChildren(h("div", { class: "page narrow" }, h("p", { text: "This video isn't playable yet." }),
      h("a", { href: `/watch/${encodeURIComponent(videoId)}`, text: "Follow its processing" })));
    return null;
  }
  const pager = new Pager({ items: [video], label: "Video", loop: false });
  view.replaceChildren(pager.root);
  await pager.start();
  return () => pager.destroy();
}

// Full-screen player over a page (profile, hashtag, sound, search): the grid's list, from the
// tapped video on. Escape or the close button returns to the grid.
export function openPlayer(items, index) {
  const close = h("button", { type: "button", class: "icon-btn overlay-close", "aria-label": "Close player", text: "×" });
  const pager = new Pager({ items, startIndex: index, label: "Videos", loop: false });
  const overlay = h("div", { class: "player-overlay", role: "dialog", "aria-modal": "true", "aria-label": "Player" },
    pager.root, close);
  const previous = document.activeElement;
  function shut() {
    pager.destroy();
    overlay.remove();
    document.removeEventListener("keydown", onKey);
    window.removeEventListener("popstate", shut);
    if (previous && previous.focus) previous.focus();
  }
  function onKey(event) {
    if (event.key === "Escape" && !document.querySelector(".sheet-backdrop")) shut();
  }
  close.addEventListener("click", shut);
  document.addEventListener("keydown", onKey);
  window.addEventListener("popstate", shut);
  document.body.append(overlay);
  pager.start();
  return shut;
}

export function videoGrid(items, { emptyText = "No videos yet.", owner = false } = {}) {
  if (!items.length) return h("p", { class: "muted empty-grid", text: emptyText });
  const playable = items.filter((item) => item.urls && item.urls.hls);
  return h("ul", { class: "grid", role: "list" }, items.map((item) => {
    const poster = item.urls && item.urls.poster;
    const img = poster ? h("img", { src: poster, alt: "", loading: "lazy", decoding: "async" }) : h("div", { class: "no-poster" });
    const preview = item.urls && item.urls.preview;
    const label = item.caption ? `Play: ${item.caption.slice(0, 80)}` : "Play video";
    const tile = h("button", { type: "button", class: "tile", "aria-label": label, "data-id": item.id },
      img, h("span", { class: "tile-views" }, icon("play"), String(item.view_count || 0)),
      item.status !== "ready" ? h("span", { class: "tile-status", text: item.status }) : null);
    if (preview && poster) {
      // Animated WebP preview on hover / focus, back to the still poster after.
      const show = () => { img.src = preview; };
      const hide = () => { img.src = poster; };
      tile.addEventListener("mouseenter", show);
      tile.addEventListener("focus", show);
      tile.addEventListener("mouseleave", hide);
      tile.addEventListener("blur", hide);
    }
    tile.addEventListener("click", () => {
      const at = playable.indexOf(item);
      if (at >= 0) openPlayer(playable, at);
      else if (owner) location.assign(`/watch/${encodeURIComponent(item.id)}`);
    });
    const children = [tile];
    if (owner) children.push(h("a", { class: "tile-link", href: `/analytics/${encodeURIComponent(item.id)}`,
      "data-link": true, text: "Analytics" }));
    return h("li", {}, children);
  }));
}
