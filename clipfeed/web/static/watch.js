// /watch/{id}: fetch the video's metadata, show processing progress or the rejection reason,
// then play its HLS (hls.js; native HLS where hls.js cannot run, e.g. iOS Safari).
// Untrusted text (captions, reasons) is only ever set through textContent.

const POLL_MS = 1000;
const MAX_RECOVERIES = 3;

const root = document.getElementById("watch");
const videoId = root ? root.dataset.videoId || "" : "";
const player = document.getElementById("player");
const overlay = document.getElementById("status");
const message = document.getElementById("message");
const progress = document.getElementById("progress");
const caption = document.getElementById("caption");
const soundButton = document.getElementById("sound");

let hls = null;
let source = null;
let started = false;
let recoveries = 0;
let pollTimer = 0;

function show(text, { error = false, percent = null, onClick = null } = {}) {
  overlay.hidden = false;
  overlay.classList.toggle("error", error);
  message.textContent = text;
  progress.hidden = percent === null;
  if (percent !== null) progress.value = Math.max(0, Math.min(100, percent));
  overlay.onclick = onClick;
  overlay.classList.toggle("clickable", Boolean(onClick));
}

function hideOverlay() {
  overlay.hidden = true;
  overlay.onclick = null;
}

function notFound() {
  player.hidden = true;
  show("This video isn't available. It may have been removed, or it is private.", { error: true });
  document.title = "Video not found · clipfeed";
}

function poll() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(refresh, POLL_MS);
}

async function fetchVideo() {
  const response = await fetch(`/api/v1/videos/${encodeURIComponent(videoId)}`, {
    credentials: "same-origin",
    cache: "no-store",
    headers: { Accept: "application/json" },
  });
  if (response.status === 404 || response.status === 403 || response.status === 401) return null;
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

async function refresh() {
  if (!videoId) {
    notFound();
    return;
  }
  let video;
  try {
    video = await fetchVideo();
  } catch {
    show("Can't reach clipfeed right now. Retrying…", { error: true });
    pollTimer = setTimeout(refresh, 2 * POLL_MS);
    return;
  }
  if (!video) {
    notFound();
    return;
  }
  caption.textContent = video.caption || "";
  document.title = video.caption ? `${video.caption.slice(0, 60)} · clipfeed` : "clipfeed";
  const urls = video.urls || {};
  if (urls.poster && !player.getAttribute("poster")) player.poster = urls.poster;

  if (video.status === "rejected" || video.status === "failed") {
    const fallback = video.status === "rejected"
      ? "This upload could not be accepted."
      : "Processing this video failed.";
    show(video.rejection_reason || fallback, { error: true });
    return;
  }
  if (urls.hls) {
    play(urls.hls);
    return;
  }
  if (video.status === "uploading") {
    show("Uploading…");
  } else {
    const percent = Math.floor(Number(video.progress) || 0);
    show(`Processing… ${percent}%`, { percent });
  }
  poll();
}

function play(src) {
  if (source === src) return;
  source = src;
  player.hidden = false;
  player.muted = true;
  player.defaultMuted = true;
  player.playsInline = true;
  player.loop = true;
  const Hls = window.Hls;
  if (Hls && Hls.isSupported()) {
    if (!hls) {
      hls = new Hls({ capLevelToPlayerSize: true, backBufferLength: 30 });
      hls.on(Hls.Events.ERROR, (_event, data) => onHlsError(Hls, data));
      hls.attachMedia(player);
    }
    hls.loadSource(src);
  } else if (player.canPlayType("application/vnd.apple.mpegurl")) {
    player.src = src;
  } else {
    show("This browser can't play this video.", { error: true });
    return;
  }
  if (!started) {
    started = true;
    show("Loading…");
    player.addEventListener("playing", onPlaying);
    player.addEventListener("volumechange", updateSoundButton);
  }
  startPlayback();
}

function startPlayback() {
  const attempt = player.play();
  if (attempt && attempt.catch) {
    attempt.catch(() => show("Tap to play", { onClick: () => { hideOverlay(); startPlayback(); } }));
  }
}

function onPlaying() {
  recoveries = 0;
  hideOverlay();
  updateSoundButton();
}

function updateSoundButton() {
  soundButton.hidden = !player.muted;
}

function onHlsError(Hls, data) {
  if (!data.fatal) return;
  recoveries += 1;
  if (recoveries > MAX_RECOVERIES) {
    hls.destroy();
    hls = null;
    show("Playback failed. Reload the page to try again.", { error: true });
    return;
  }
  if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
    hls.recoverMediaError();
  } else if (data.type === Hls.ErrorTypes.NETWORK_ERROR) {
    // A signed link may have expired: fetch fresh URLs, then reload.
    source = null;
    refresh();
  } else {
    show("Playback failed. Reload the page to try again.", { error: true });
  }
}

soundButton.addEventListener("click", () => {
  player.muted = false;
  startPlayback();
});

player.addEventListener("click", () => {
  if (player.paused) startPlayback();
  else player.pause();
});

refresh();
