// Playback plumbing for the pager: a throughput estimate, the start level it implies, cache
// warming for videos further ahead, and <video> slots that are attached and fully released.
//
// Preloading design: the pager keeps at most three <video> elements (previous, current, next).
// The next one has its own hls.js instance attached and buffered, so a swipe only calls play().
// Videos 2..5 ahead are warmed with plain fetch(): master playlist, the variant playlist at the
// level we would start on, its init segment and first media segment. Those land in the HTTP
// cache (segments are served `immutable`), so when that video becomes "next" its hls.js instance
// reads them from the cache instead of the network. Nothing outside the window keeps a decoder,
// a MediaSource or a buffer alive.

const DEFAULT_BPS = 3_000_000;
const SAFETY = 0.75;  // start on a rung whose bandwidth fits in 75% of the estimate
let measuredBps = null;

export function recordThroughput(bytes, ms) {
  if (bytes < 32_000 || ms <= 0) return;  // tiny responses measure latency, not throughput
  const sample = (bytes * 8 * 1000) / ms;
  measuredBps = measuredBps === null ? sample : 0.7 * measuredBps + 0.3 * sample;
}

export function estimateBps() {
  const connection = navigator.connection;
  const hinted = connection && connection.downlink ? connection.downlink * 1e6 : null;
  if (connection && connection.saveData) return Math.min(measuredBps || DEFAULT_BPS, 800_000);
  if (measuredBps !== null && hinted !== null) return Math.min(measuredBps, Math.max(hinted, 1e6) * 4);
  return measuredBps ?? hinted ?? DEFAULT_BPS;
}

// Variants sorted by bandwidth ascending, as hls.js orders its levels.
export function chooseLevel(bandwidths, bps = estimateBps()) {
  let chosen = 0;
  bandwidths.forEach((bandwidth, index) => { if (bandwidth <= bps * SAFETY) chosen = index; });
  return chosen;
}

function parseMaster(text, base) {
  const variants = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i += 1) {
    if (!lines[i].startsWith("#EXT-X-STREAM-INF:")) continue;
    const bandwidth = Number((/BANDWIDTH=(\d+)/.exec(lines[i]) || [])[1]) || 0;
    let j = i + 1;
    while (j < lines.length && (!lines[j].trim() || lines[j].startsWith("#"))) j += 1;
    if (j < lines.length) variants.push({ bandwidth, url: new URL(lines[j].trim(), base).href });
  }
  return variants.sort((a, b) => a.bandwidth - b.bandwidth);
}

function parseMedia(text, base) {
  const map = /#EXT-X-MAP:URI="([^"]+)"/.exec(text);
  const first = text.split(/\r?\n/).find((line) => line.trim() && !line.startsWith("#"));
  return [map && new URL(map[1], base).href, first && new URL(first.trim(), base).href].filter(Boolean);
}

async function timedFetch(url, signal) {
  const started = performance.now();
  const response = await fetch(url, { signal, credentials: "same-origin" });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const body = await response.arrayBuffer();
  recordThroughput(body.byteLength, performance.now() - started);
  return body;
}

const warmed = new Map();  // hls url -> AbortController (or true once done)

export function warm(hlsUrl) {
  if (!hlsUrl || warmed.has(hlsUrl)) return;
  const controller = new AbortController();
  warmed.set(hlsUrl, controller);
  (async () => {
    const master = new URL(hlsUrl, location.href).href;
    const masterText = new TextDecoder().decode(await timedFetch(master, controller.signal));
    const variants = parseMaster(masterText, master);
    if (!variants.length) return;
    const variant = variants[chooseLevel(variants.map((v) => v.bandwidth))];
    const mediaText = new TextDecoder().decode(await timedFetch(variant.url, controller.signal));
    for (const url of parseMedia(mediaText, variant.url)) await timedFetch(url, controller.signal);
    warmed.set(hlsUrl, true);
  })().catch(() => warmed.delete(hlsUrl));
  if (warmed.size > 64) {
    for (const key of warmed.keys()) {
      if (warmed.size <= 32) break;
      if (warmed.get(key) === true) warmed.delete(key);
    }
  }
}

export function cancelWarm(keep) {
  for (const [url, state] of warmed) {
    if (state !== true && !keep.has(url)) {
      state.abort();
      warmed.delete(url);
    }
  }
}

// The still shown until a card's video plays. Not an <img> (nor video.poster): Chromium keeps
// every decoded image in its image decode cache (discardable shared memory, about 3.7 MB for a
// 720x1280 poster) long after the element is gone, so a feed of distinct posters grew the
// renderer by that much per swipe. Here the poster is fetched, decoded at the size it is shown
// (createImageBitmap with a resize), drawn into a <canvas> and the bitmap closed at once;
// release() empties the canvas. Nothing outlives the card.
export class Poster {
  constructor(url, { width = 0, height = 0 } = {}) {
    this.canvas = document.createElement("canvas");
    this.canvas.className = "poster";
    this.canvas.setAttribute("aria-hidden", "true");
    this.canvas.width = 0;
    this.canvas.height = 0;
    this.controller = new AbortController();
    this.paint(url, width, height).catch(() => null);  // no poster: the card stays dark until the video plays
  }

  async paint(url, width, height) {
    const signal = this.controller.signal;
    const response = await fetch(url, { signal, credentials: "same-origin" });
    if (!response.ok) return;
    const blob = await response.blob();
    if (signal.aborted) return;
    // Decode at the device pixels the card covers (object-fit: cover), never above the source.
    const dpr = Math.min(window.devicePixelRatio || 1, 3);
    const boxW = Math.max(1, (window.innerWidth || 390) * dpr);
    const boxH = Math.max(1, (window.innerHeight || 844) * dpr);
    const options = { resizeQuality: "medium" };
    if (width > 0 && height > 0) {
      const scale = Math.min(1, Math.max(boxW / width, boxH / height));
      options.resizeWidth = Math.max(1, Math.round(width * scale));
      options.resizeHeight = Math.max(1, Math.round(height * scale));
    }
    const bitmap = await createImageBitmap(blob, options);
    try {
      if (signal.aborted) return;
      this.canvas.width = bitmap.width;
      this.canvas.height = bitmap.height;
      this.canvas.getContext("2d", { alpha: false }).drawImage(bitmap, 0, 0);
    } finally {
      bitmap.close();
    }
  }

  release() {
    this.controller.abort();
    this.canvas.width = 0;
    this.canvas.height = 0;
    this.canvas.remove();
  }
}

// One <video> with its hls.js instance. release() leaves nothing behind.
export class Slot {
  constructor(item, { onError } = {}) {
    this.item = item;
    this.hls = null;
    this.video = document.createElement("video");
    this.video.className = "clip";
    this.video.muted = true;
    this.video.defaultMuted = true;
    this.video.playsInline = true;
    this.video.loop = true;
    this.video.preload = "auto";
    this.video.setAttribute("playsinline", "");
    this.video.setAttribute("aria-hidden", "true");
    this.onError = onError;
    this.recoveries = 0;
  }

  load() {
    const src = this.item.urls && this.item.urls.hls;
    if (!src) return;
    const Hls = window.Hls;
    if (Hls && Hls.isSupported()) {
      const bps = estimateBps();
      const bandwidths = (this.item.renditions || []).map((r) => r.bandwidth || 0).sort((a, b) => a - b);
      this.hls = new Hls({
        startLevel: bandwidths.length ? chooseLevel(bandwidths, bps) : -1,
        abrEwmaDefaultEstimate: bps,
        capLevelToPlayerSize: true,
        maxBufferLength: 8,
        maxMaxBufferLength: 16,
        backBufferLength: 4,
        startFragPrefetch: true,
      });
      this.hls.on(Hls.Events.ERROR, (_event, data) => this.handleError(Hls, data));
      this.hls.loadSource(src);
      this.hls.attachMedia(this.video);
    } else if (this.video.canPlayType("application/vnd.apple.mpegurl")) {
      this.video.src = src;  // Safari / iOS: native HLS
    } else if (this.onError) {
      this.onError("This browser can't play HLS video.");
    }
  }

  handleError(Hls, data) {
    if (!data.fatal) return;
    this.recoveries += 1;
    if (this.recoveries <= 2 && data.type === Hls.ErrorTypes.MEDIA_ERROR) {
      this.hls.recoverMediaError();
    } else if (this.recoveries <= 2 && data.type === Hls.ErrorTypes.NETWORK_ERROR) {
      this.hls.startLoad();
    } else if (this.onError) {
      this.onError("This video couldn't be played.");
    }
  }

  release() {
    if (this.hls) {
      const estimate = this.hls.bandwidthEstimate;
      if (Number.isFinite(estimate) && estimate > 0) {
        measuredBps = measuredBps === null ? estimate : 0.7 * measuredBps + 0.3 * estimate;
      }
      this.hls.destroy();
      this.hls = null;
    }
    this.video.pause();
    this.video.removeAttribute("src");
    this.video.load();
    this.video.remove();
  }
}
