// The full-screen vertical pager used by the feeds and by grids opened into a player.
// Only the cards around the current one exist in the DOM; at most three <video> elements live
// (previous, current, next) and everything else is released (see playback.js).

import { api, knownUser, profile, forgetProfile } from "./api.js";
import { h, icon, formatCount, richText, toast, go } from "./dom.js";
import { Poster, Slot, warm, cancelWarm } from "./playback.js";
import { openComments, openShare } from "./sheets.js";

const WARM_AHEAD = 5;
const MUTE_KEY = "clipfeed.unmuted";
const DOUBLE_TAP_MS = 280;
const SWIPE_PX = 60;

// First-frame timings after swipes, read by tests and bench/swipe.py.
const metrics = (window.__clipfeed = window.__clipfeed || { firstFrames: [], views: [] });

// Bytes of media held by the live <video> elements, estimated as buffered seconds times the
// playing level's bitrate (browsers expose no exact figure); bench/swipe.py samples it.
const liveSlots = new Set();
metrics.mediaBytes = () => {
  let bytes = 0;
  for (const slot of liveSlots) {
    const ranges = slot.video.buffered;
    let seconds = 0;
    for (let i = 0; i < ranges.length; i += 1) seconds += ranges.end(i) - ranges.start(i);
    const level = slot.hls && slot.hls.levels && slot.hls.levels[Math.max(0, slot.hls.currentLevel)];
    const bitrate = (level && level.bitrate) || Math.max(0, ...(slot.item.renditions || []).map((r) => r.bandwidth || 0));
    bytes += (seconds * bitrate) / 8;
  }
  return { bytes, elements: document.querySelectorAll("video").length, slots: liveSlots.size };
};

export function preloadEnabled() {
  return new URLSearchParams(location.search).get("preload") !== "0";
}

function soundOn() {
  try { return localStorage.getItem(MUTE_KEY) === "1"; } catch { return false; }
}

function rememberSound(on) {
  try { localStorage.setItem(MUTE_KEY, on ? "1" : "0"); } catch { /* private mode: not remembered */ }
}

function sendView(item, session) {
  if (!session || session.watchedMs < 1) return;
  const duration = item.duration_ms || 0;
  const replay = session.loops > 0;
  let watchMs = Math.round(session.watchedMs);
  if (duration) watchMs = Math.min(watchMs, replay ? duration * 10 : duration);
  const body = JSON.stringify({ watch_ms: watchMs, completed: session.completed || replay, replay });
  const url = `/api/v1/videos/${encodeURIComponent(item.id)}/view`;
  metrics.views.push({ id: item.id, watch_ms: watchMs, completed: session.completed || replay, replay });
  if (metrics.views.length > 200) metrics.views.splice(0, 100);
  const blob = new Blob([body], { type: "application/json" });
  if (!(navigator.sendBeacon && navigator.sendBeacon(url, blob))) {
    fetch(url, { method: "POST", body, keepalive: true, credentials: "same-origin",
      headers: { "Content-Type": "application/json" } }).catch(() => null);
  }
}

export class Pager {
  // source: async (cursor) => {items, next_cursor}; items: an optional first page already known.
  constructor({ source, items = [], startIndex = 0, label = "Videos", emptyText = "Nothing here yet.", loop = true }) {
    this.source = source;
    this.items = items.filter(playableItem);
    this.index = Math.max(0, Math.min(startIndex, this.items.length - 1));
    this.cursor = null;
    this.exhausted = !source;
    this.loop = loop;
    this.loading = null;
    this.cards = new Map();  // absolute index -> {card, slot, session}
    this.preload = preloadEnabled();
    this.sound = soundOn();
    this.emptyText = emptyText;
    this.track = h("div", { class: "track", role: "feed", "aria-label": label, "aria-busy": "true" });
    this.root = h("section", { class: "pager", tabindex: "0", "aria-roledescription": "vertical video pager",
      "aria-label": `${label}. Use arrow keys or swipe to move between videos.` }, this.track);
    this.offset = 0;  // items dropped from the front (keeps memory flat over hours of swiping)
    this.bind();
  }

  async start() {
    if (!this.items.length && this.source) await this.fetchMore();
    this.track.setAttribute("aria-busy", "false");
    if (!this.items.length) {
      this.track.append(h("div", { class: "empty" }, h("p", { text: this.emptyText })));
      return;
    }
    this.render();
    this.root.focus({ preventScroll: true });
  }

  async fetchMore() {
    if (this.loading) return this.loading;
    if (this.exhausted && !(this.loop && this.items.length)) return null;
    this.loading = (async () => {
      try {
        const wrapping = this.exhausted;
        const page = await this.source(wrapping ? null : this.cursor);
        if (wrapping) this.exhausted = false;  // caught up: start the feed over
        // Ranked pages can shift between requests (popularity moves): never show a video twice
        // in the window we still hold, and on a wrap never right after itself.
        const recent = new Set((wrapping ? this.items.slice(-3) : this.items).map((item) => item.id));
        const fresh = (page.items || []).filter((item) => playableItem(item) && !recent.has(item.id));
        this.items.push(...fresh);
        this.cursor = page.next_cursor || null;
        if (!this.cursor) this.exhausted = true;
        if (!fresh.length && !this.cursor && !this.items.length) this.exhausted = true;
      } catch (error) {
        toast(error.message || "Couldn't load more videos.", { error: true });
      } finally {
        this.loading = null;
      }
    })();
    return this.loading;
  }

  bind() {
    let startY = null;
    let startX = null;
    let startTime = 0;
    this.root.addEventListener("touchstart", (event) => {
      if (event.target.closest(".progress, .rail, .meta a")) return;
      startY = event.touches[0].clientY;
      startX = event.touches[0].clientX;
      startTime = performance.now();
    }, { passive: true });
    this.root.addEventListener("touchmove", (event) => {
      if (startY === null) return;
      const dy = event.touches[0].clientY - startY;
      this.drag(dy);
    }, { passive: true });
    this.root.addEventListener("touchend", (event) => {
      if (startY === null) return;
      const touch = event.changedTouches[0];
      const dy = touch.clientY - startY;
      const dx = touch.clientX - startX;
      const fast = Math.abs(dy) > 20 && performance.now() - startTime < 250;
      startY = null;
      this.drag(0);
      if ((Math.abs(dy) > SWIPE_PX || fast) && Math.abs(dy) > Math.abs(dx)) this.go(dy < 0 ? 1 : -1);
    });
    let wheelLock = 0;
    this.root.addEventListener("wheel", (event) => {
      event.preventDefault();
      if (Math.abs(event.deltaY) < 15 || performance.now() < wheelLock) return;
      wheelLock = performance.now() + 450;
      this.go(event.deltaY > 0 ? 1 : -1);
    }, { passive: false });
    this.onKey = (event) => {
      if (!this.root.isConnected || document.querySelector(".sheet-backdrop")) return;
      if (event.target.closest && event.target.closest("input, textarea, select, [contenteditable]")) return;
      const current = this.cards.get(this.index);
      if (event.key === "ArrowDown" || event.key === "PageDown" || event.key === "j") {
        event.preventDefault(); this.go(1);
      } else if (event.key === "ArrowUp" || event.key === "PageUp" || event.key === "k") {
        event.preventDefault(); this.go(-1);
      } else if (event.key === " " && event.target === this.root && current) {
        event.preventDefault(); this.togglePause(current);
      } else if (event.key === "m" && current) {
        this.setSound(!this.sound, current);
      } else if (event.key === "l" && current) {
        this.like(current, true);
      }
    };
    document.addEventListener("keydown", this.onKey);
    this.onVisibility = () => {
      const current = this.cards.get(this.index);
      if (!current) return;
      if (document.visibilityState === "hidden") {
        current.slot && current.slot.video.pause();
        this.flushView(current);
      } else if (!current.userPaused) {
        this.play(current);
      }
    };
    document.addEventListener("visibilitychange", this.onVisibility);
    this.onPageHide = () => { const current = this.cards.get(this.index); if (current) this.flushView(current); };
    window.addEventListener("pagehide", this.onPageHide);
  }

  drag(dy) {
    for (const [index, entry] of this.cards) {
      entry.card.style.transform = `translate3d(0, calc(${(index - this.index) * 100}% + ${dy}px), 0)`;
      entry.card.classList.toggle("dragging", dy !== 0);
    }
  }

  async go(step) {
    const target = this.index + step;
    if (target < this.offset) return;
    if (target >= this.offset + this.items.length) {
      await this.fetchMore();
      if (target >= this.offset + this.items.length) {
        if (step > 0) toast("You're all caught up.");
        return;
      }
    }
    const leaving = this.cards.get(this.index);
    if (leaving) {
      if (leaving.slot) leaving.slot.video.pause();
      this.flushView(leaving);
    }
    this.index = target;
    this.swipedAt = performance.now();
    this.render();
    if (this.offset + this.items.length - this.index <= WARM_AHEAD + 2) this.fetchMore().then(() => this.render());
  }

  // "Not interested": the video leaves the feed for good (not just skipped, so swiping back
  // never finds it); the next one takes its place, or the previous one at the end of the feed.
  async remove(entry) {
    const index = [...this.cards].find(([, other]) => other === entry)?.[0];
    if (index === undefined) return;
    if (entry.slot) entry.slot.video.pause();
    if (index === this.index) this.flushView(entry);
    this.releaseCard(entry);
    this.cards.delete(index);
    this.items.splice(index - this.offset, 1);
    // Cards after the removed one move up a place.
    const moved = [...this.cards].filter(([i]) => i > index).sort(([a], [b]) => a - b);
    for (const [i, other] of moved) {
      this.cards.delete(i);
      this.cards.set(i - 1, other);
    }
    if (index < this.index) this.index -= 1;
    if (index === this.index) {
      this.activeIndex = null;
      if (this.index >= this.offset + this.items.length) await this.fetchMore();
      if (this.index >= this.offset + this.items.length) this.index = Math.max(this.offset, this.index - 1);
      if (!this.items.length) {
        this.track.replaceChildren(h("div", { class: "empty" }, h("p", { text: this.emptyText })));
        return;
      }
      this.swipedAt = performance.now();
    }
    this.render();
  }

  item(index) {
    return this.items[index - this.offset];
  }

  // Keeps cards for index-1..index+1, a <video> for each (only the current one without
  // preloading), and warms the next WARM_AHEAD. Everything outside is released.
  render() {
    const current = this.cards.get(this.index);
    if (current && current.slot && this.activeIndex !== this.index) {
      // Fast path: the preloaded neighbour starts right away; building the next card (a new
      // hls.js instance, DOM) waits until its first frame had the main thread to itself.
      this.position();
      this.activate(current);
      clearTimeout(this.fillTimer);
      this.fillTimer = setTimeout(() => this.fill(), 150);
      return;
    }
    this.fill();
  }

  position() {
    for (const [index, entry] of this.cards) {
      entry.card.style.transform = `translate3d(0, ${(index - this.index) * 100}%, 0)`;
      entry.card.setAttribute("aria-hidden", index === this.index ? "false" : "true");
      entry.card.inert = index !== this.index;
      if (index !== this.index && entry.slot) entry.slot.video.pause();
    }
  }

  activate(current) {
    this.activeIndex = this.index;
    current.session = { watchedMs: 0, lastTime: 0, loops: 0, completed: false };
    current.userPaused = false;
    current.card.classList.remove("paused");
    if (current.slot) {
      // A preloaded neighbour that never played sits at 0: seeking it anyway costs a frame.
      if (current.slot.video.currentTime > 0.05) current.slot.video.currentTime = 0;
      this.play(current);
    }
  }

  fill() {
    clearTimeout(this.fillTimer);
    if (this.index - this.offset > 60) {
      const drop = this.index - this.offset - 20;
      this.items.splice(0, drop);
      this.offset += drop;
    }
    const wanted = new Set();
    for (let i = this.index - 1; i <= this.index + 1; i += 1) if (this.item(i)) wanted.add(i);
    for (const [index, entry] of this.cards) {
      if (!wanted.has(index)) {
        this.releaseCard(entry);
        this.cards.delete(index);
      }
    }
    for (const index of wanted) {
      let entry = this.cards.get(index);
      if (!entry) {
        entry = this.buildCard(this.item(index), index);
        this.cards.set(index, entry);
        this.track.append(entry.card);
      }
      const needsVideo = index === this.index || this.preload;
      if (needsVideo && !entry.slot) this.attach(entry);
      if (!needsVideo && entry.slot) this.detach(entry);
    }
    this.position();
    const current = this.cards.get(this.index);
    if (current && this.activeIndex !== this.index) this.activate(current);
    const keep = new Set();
    if (this.preload) {
      for (let i = this.index + 2; i <= this.index + WARM_AHEAD; i += 1) {
        const next = this.item(i);
        if (next && next.urls && next.urls.hls) {
          warm(next.urls.hls);
          keep.add(next.urls.hls);
        }
      }
    }
    cancelWarm(keep);
  }

  attach(entry) {
    const slot = new Slot(entry.item, { onError: (message) => this.showError(entry, message) });
    entry.slot = slot;
    liveSlots.add(slot);
    const video = slot.video;
    video.muted = !this.sound;
    video.addEventListener("timeupdate", () => this.onTime(entry));
    video.addEventListener("playing", () => {
      entry.card.classList.add("started");
      if (this.cards.get(this.index) === entry) this.markFirstFrame(entry);
    });
    entry.stage.prepend(video);
    slot.load();
  }

  detach(entry) {
    liveSlots.delete(entry.slot);
    entry.slot.release();
    entry.slot = null;
    entry.card.classList.remove("started");
  }

  releaseCard(entry) {
    if (entry.slot) this.detach(entry);
    if (entry.poster) entry.poster.release();
    entry.poster = null;
    entry.card.remove();
  }

  markFirstFrame(entry) {
    const started = this.swipedAt;
    if (!started || entry.measured === started) return;
    entry.measured = started;
    const video = entry.slot && entry.slot.video;
    const done = () => {
      metrics.firstFrames.push({ id: entry.item.id, ms: performance.now() - started, preload: this.preload });
      if (metrics.firstFrames.length > 2000) metrics.firstFrames.splice(0, 1000);
    };
    if (video && video.requestVideoFrameCallback) video.requestVideoFrameCallback(done);
    else done();
  }

  play(entry) {
    if (!entry.slot) return;
    const video = entry.slot.video;
    video.muted = !this.sound;
    const attempt = video.play();
    if (attempt && attempt.catch) {
      attempt.catch((error) => {
        if (error && error.name === "NotAllowedError" && !video.muted) {
          // Sound needs a gesture on this browser: play muted and offer the tap to unmute.
          video.muted = true;
          this.updateMute(entry);
          video.play().catch(() => entry.card.classList.add("paused"));
        }
      });
    }
    this.updateMute(entry);
  }

  togglePause(entry) {
    if (!entry.slot) return;
    const video = entry.slot.video;
    if (video.paused) {
      entry.userPaused = false;
      this.play(entry);
    } else {
      entry.userPaused = true;
      video.pause();
    }
    entry.card.classList.toggle("paused", entry.userPaused);
  }

  setSound(on, entry) {
    this.sound = on;
    rememberSound(on);
    for (const other of this.cards.values()) if (other.slot) other.slot.video.muted = !on;
    if (entry) this.updateMute(entry);
  }

  updateMute(entry) {
    const muted = !entry.slot || entry.slot.video.muted;
    entry.muteButton.replaceChildren(...[icon(muted ? "muted" : "unmuted")].flat());
    entry.muteButton.setAttribute("aria-label", muted ? "Unmute" : "Mute");
    entry.muteButton.setAttribute("aria-pressed", muted ? "false" : "true");
  }

  onTime(entry) {
    const video = entry.slot && entry.slot.video;
    const session = entry.session;
    if (!video || !session || this.cards.get(this.index) !== entry) return;
    const now = video.currentTime;
    const duration = video.duration || (entry.item.duration_ms || 0) / 1000;
    if (session.lastTime !== null) {
      const delta = now - session.lastTime;
      if (delta > 0 && delta < 1.5) session.watchedMs += delta * 1000;
      else if (delta < 0 && session.lastTime > duration - 1.0 && !entry.seeking) {
        session.loops += 1;
        session.completed = true;
        session.watchedMs += Math.max(0, duration - session.lastTime) * 1000;
      }
    }
    session.lastTime = now;
    if (duration && !entry.scrubbing) {
      const fraction = Math.min(1, now / duration);
      entry.bar.style.transform = `scaleX(${fraction})`;
      entry.progress.setAttribute("aria-valuenow", String(Math.round(now)));
      entry.progress.setAttribute("aria-valuetext", `${Math.round(now)} of ${Math.round(duration)} seconds`);
    }
  }

  flushView(entry) {
    if (this.cards.get(this.index) === entry) this.onTime(entry);  // count the last partial interval
    if (entry.session && entry.session.watchedMs > 0) sendView(entry.item, entry.session);
    entry.session = { watchedMs: 0, lastTime: entry.slot ? entry.slot.video.currentTime : null, loops: 0,
      completed: false };
  }

  showError(entry, message) {
    entry.errorText.textContent = message;
    entry.errorText.hidden = false;
  }

  buildCard(item, index) {
    const entry = { item, index, slot: null, session: null, userPaused: false };
    const poster = item.urls && item.urls.poster;
    entry.poster = poster ? new Poster(poster, { width: item.width, height: item.height }) : null;
    entry.stage = h("div", { class: "stage-fill" }, entry.poster ? entry.poster.canvas : null);
    const tap = h("div", { class: "tap-layer", "aria-hidden": "true" });
    let lastTap = 0;
    let tapTimer = 0;
    tap.addEventListener("click", (event) => {
      const now = performance.now();
      if (now - lastTap < DOUBLE_TAP_MS) {
        clearTimeout(tapTimer);
        lastTap = 0;
        this.burst(entry, event);
        this.like(entry, true);
        return;
      }
      lastTap = now;
      tapTimer = setTimeout(() => this.togglePause(entry), DOUBLE_TAP_MS);
    });
    entry.muteButton = h("button", { type: "button", class: "icon-btn mute", "aria-label": "Unmute" });
    entry.muteButton.addEventListener("click", () => {
      const current = entry.slot ? entry.slot.video.muted : true;
      this.setSound(current, entry);
      if (entry.slot && !entry.userPaused) this.play(entry);
    });
    this.updateMute(entry);
    entry.errorText = h("p", { class: "card-error", role: "alert", hidden: true });
    entry.bar = h("div", { class: "bar" });
    entry.progress = h("div", { class: "progress", role: "slider", tabindex: "0", "aria-label": "Seek",
      "aria-valuemin": "0", "aria-valuemax": String(Math.round((item.duration_ms || 0) / 1000)),
      "aria-valuenow": "0" }, h("div", { class: "bar-track" }, entry.bar));
    this.bindScrub(entry);
    entry.rail = this.buildRail(entry);
    entry.handle = h("a", { class: "handle", href: "#", "data-link": true, text: "@…" });
    const meta = h("div", { class: "meta" }, entry.handle, richText(item.caption || ""));
    entry.card = h("article", { class: "card", "data-id": item.id, "aria-label": "Video" },
      entry.stage, tap, h("div", { class: "pause-indicator", "aria-hidden": "true" }, icon("play")),
      entry.muteButton, entry.errorText, entry.rail, meta, entry.progress);
    this.fillOwner(entry);
    return entry;
  }

  async fillOwner(entry) {
    try {
      const owner = await profile(entry.item.owner_id);
      entry.owner = owner;
      entry.handle.textContent = `@${owner.handle}`;
      entry.handle.href = `/u/${encodeURIComponent(owner.handle)}`;
      entry.card.setAttribute("aria-label", `Video by @${owner.handle}`);
      entry.avatar.textContent = (owner.display_name || owner.handle || "?").slice(0, 1).toUpperCase();
      entry.avatar.href = `/u/${encodeURIComponent(owner.handle)}`;
      entry.avatar.setAttribute("aria-label", `@${owner.handle}'s profile`);
      entry.follow.hidden = owner.is_me || owner.is_following;
      entry.follow.setAttribute("aria-label", `Follow @${owner.handle}`);
    } catch {
      entry.handle.textContent = "@unknown";
    }
  }

  buildRail(entry) {
    const item = entry.item;
    entry.avatar = h("a", { class: "avatar", href: "#", "data-link": true, "aria-label": "Creator profile", text: "·" });
    entry.follow = h("button", { type: "button", class: "follow-badge", "aria-label": "Follow", hidden: true, text: "+" });
    entry.follow.addEventListener("click", () => this.follow(entry));
    entry.likeCount = h("span", { class: "count", text: formatCount(item.like_count) });
    entry.likeButton = h("button", { type: "button", class: "rail-btn like", "aria-label": "Like",
      "aria-pressed": item.liked ? "true" : "false" }, icon("heart"), entry.likeCount);
    entry.likeButton.addEventListener("click", () => this.like(entry, !entry.item.liked));
    entry.commentCount = h("span", { class: "count", text: formatCount(item.comment_count) });
    const comments = h("button", { type: "button", class: "rail-btn comments", "aria-label": "Comments" },
      icon("comment"), entry.commentCount);
    comments.addEventListener("click", () => openComments(item, (count) => {
      item.comment_count = count;
      entry.commentCount.textContent = formatCount(count);
    }));
    const share = h("button", { type: "button", class: "rail-btn share", "aria-label": "Share" },
      icon("share"), h("span", { class: "count", text: formatCount(item.share_count) }));
    share.addEventListener("click", () => openShare(item, { onNotInterested: () => this.remove(entry) }));
    const soundId = item.sound_id || item.original_sound_id;
    const sound = soundId
      ? h("a", { class: "rail-btn sound", href: `/sound/${encodeURIComponent(soundId)}`, "data-link": true,
        "aria-label": "Videos with this sound" }, icon("sound"))
      : null;
    return h("aside", { class: "rail", "aria-label": "Actions" },
      h("div", { class: "creator" }, entry.avatar, entry.follow), entry.likeButton, comments, share, sound);
  }

  burst(entry, event) {
    // Reduced motion: the filled heart on the rail says it; no flying heart.
    if (window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches) return;
    const rect = entry.card.getBoundingClientRect();
    const heart = h("div", { class: "heart-burst", "aria-hidden": "true" }, icon("heart"));
    heart.style.left = `${(event.clientX || rect.left + rect.width / 2) - rect.left}px`;
    heart.style.top = `${(event.clientY || rect.top + rect.height / 2) - rect.top}px`;
    heart.addEventListener("animationend", () => heart.remove());
    entry.card.append(heart);
    setTimeout(() => heart.remove(), 1200);
  }

  requireLogin(action) {
    if (knownUser()) return true;
    toast(`Log in to ${action}.`);
    go(`/login?next=${encodeURIComponent(location.pathname)}`);
    return false;
  }

  async like(entry, liked) {
    if (!this.requireLogin("like videos")) return;
    const item = entry.item;
    if (item.liked === liked) return;
    const before = { liked: item.liked, count: item.like_count };
    item.liked = liked;
    item.like_count = Math.max(0, (item.like_count || 0) + (liked ? 1 : -1));
    this.paintLike(entry);
    try {
      const result = await api(`videos/${encodeURIComponent(item.id)}/like`, { method: liked ? "POST" : "DELETE" });
      if (result && typeof result.like_count === "number") item.like_count = result.like_count;
    } catch (error) {
      item.liked = before.liked;
      item.like_count = before.count;
      toast(error.message, { error: true });
    }
    this.paintLike(entry);
  }

  paintLike(entry) {
    entry.likeButton.setAttribute("aria-pressed", entry.item.liked ? "true" : "false");
    entry.likeButton.setAttribute("aria-label", entry.item.liked ? "Unlike" : "Like");
    entry.likeCount.textContent = formatCount(entry.item.like_count);
  }

  async follow(entry) {
    if (!this.requireLogin("follow creators") || !entry.owner) return;
    entry.follow.disabled = true;
    try {
      await api(`users/${encodeURIComponent(entry.owner.id)}/follow`, { method: "POST" });
      forgetProfile(entry.owner.id);
      entry.follow.hidden = true;
      for (const other of this.cards.values()) {
        if (other.item.owner_id === entry.owner.id) other.follow.hidden = true;
      }
      toast(`Following @${entry.owner.handle}`);
    } catch (error) {
      toast(error.message, { error: true });
    } finally {
      entry.follow.disabled = false;
    }
  }

  bindScrub(entry) {
    const bar = entry.progress;
    const seekTo = (clientX) => {
      const video = entry.slot && entry.slot.video;
      if (!video || !video.duration) return;
      const rect = bar.getBoundingClientRect();
      const fraction = Math.max(0, Math.min(1, (clientX - rect.left) / rect.width));
      entry.bar.style.transform = `scaleX(${fraction})`;
      entry.seeking = true;
      video.currentTime = fraction * video.duration;
      if (entry.session) entry.session.lastTime = video.currentTime;
      video.addEventListener("seeked", () => { entry.seeking = false; }, { once: true });
    };
    bar.addEventListener("pointerdown", (event) => {
      event.stopPropagation();
      entry.scrubbing = true;
      bar.setPointerCapture(event.pointerId);
      bar.classList.add("scrubbing");
      seekTo(event.clientX);
    });
    bar.addEventListener("pointermove", (event) => { if (entry.scrubbing) seekTo(event.clientX); });
    const end = () => { entry.scrubbing = false; bar.classList.remove("scrubbing"); };
    bar.addEventListener("pointerup", end);
    bar.addEventListener("pointercancel", end);
    bar.addEventListener("keydown", (event) => {
      const video = entry.slot && entry.slot.video;
      if (!video || !video.duration) return;
      if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
        event.preventDefault();
        event.stopPropagation();
        video.currentTime = Math.max(0, Math.min(video.duration - 0.1,
          video.currentTime + (event.key === "ArrowRight" ? 1 : -1)));
        if (entry.session) entry.session.lastTime = video.currentTime;
      }
    });
  }

  destroy() {
    clearTimeout(this.fillTimer);
    const current = this.cards.get(this.index);
    if (current) this.flushView(current);
    for (const entry of this.cards.values()) this.releaseCard(entry);
    this.cards.clear();
    cancelWarm(new Set());
    document.removeEventListener("keydown", this.onKey);
    document.removeEventListener("visibilitychange", this.onVisibility);
    window.removeEventListener("pagehide", this.onPageHide);
  }
}

function playableItem(item) {
  return item && item.urls && item.urls.hls;
}
