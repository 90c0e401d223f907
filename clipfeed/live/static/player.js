// Low-latency HLS playback shared by the live and Go-live pages.
//
// The scaling rule adds a rung to a stream while people watch it, and the master playlist then
// lists it. hls.js reads the master playlist once and has no API to add a level, so this player
// re-reads the master every RUNG_CHECK_MS (it is cached max-age=2, an edge absorbs the polls) and,
// when it lists a rung this player lacks and that rung would serve it better (more bits than it
// plays now, within its measured bandwidth), reloads the manifest: hls.loadSource re-creates the
// MediaSource, so playback pauses briefly and resumes at the live edge with every rung in hls.levels
// (ABR and hls.currentLevel can use the new one). A player already on a better rung is not
// interrupted; it keeps the rungs it has (none of them goes away).
const RUNG_CHECK_MS = 4000;

export function playLive(video, url, options = {}) {
  if (window.Hls && window.Hls.isSupported()) {
    const hls = new window.Hls({ lowLatencyMode: true, liveSyncDurationCount: 1, backBufferLength: 10 });
    hls.loadSource(url);
    hls.attachMedia(video);
    hls.on(window.Hls.Events.ERROR, (_event, data) => {
      if (!data.fatal) return;
      if (data.type === window.Hls.ErrorTypes.NETWORK_ERROR) setTimeout(() => hls.startLoad(), 1000);
      else if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
    });
    watchRungs(hls, url, options.rungCheckMs || RUNG_CHECK_MS);
    return hls;
  }
  video.src = url; // Safari plays LL-HLS natively (and keeps the rungs it started with)
  return null;
}

// [{uri (absolute), bandwidth, height}] of the variants in a master playlist.
export function variants(text, masterUrl) {
  const out = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i += 1) {
    if (!lines[i].startsWith("#EXT-X-STREAM-INF:")) continue;
    const bandwidth = Number((/BANDWIDTH=(\d+)/.exec(lines[i]) || [])[1] || 0);
    const height = Number((/RESOLUTION=\d+x(\d+)/.exec(lines[i]) || [])[1] || 0);
    const uri = (lines[i + 1] || "").trim();
    if (uri && !uri.startsWith("#")) out.push({ uri: new URL(uri, masterUrl).href, bandwidth, height });
  }
  return out;
}

function levelUri(level) {
  return new URL(level.uri || (Array.isArray(level.url) ? level.url[0] : level.url), location.href).href;
}

function watchRungs(hls, url, everyMs) {
  const masterUrl = new URL(url, location.href).href;
  hls.rungReloads = 0; // read by tests and the live page's diagnostics
  const timer = setInterval(async () => {
    if (!hls.media || !hls.levels || !hls.levels.length) return;
    let text;
    try {
      const response = await fetch(masterUrl, { credentials: "same-origin" });
      if (!response.ok) return;
      text = await response.text();
    } catch {
      return; // the next check tries again
    }
    const known = new Set(hls.levels.map(levelUri));
    const added = variants(text, masterUrl).filter((v) => !known.has(v.uri));
    if (!added.length) return;
    const playing = hls.levels[hls.loadLevel] || hls.levels[hls.currentLevel];
    const estimate = hls.bandwidthEstimate || 0;
    // "Better" is a sharper picture the network can carry. Heights, not bitrates: the source rung
    // is passed through and its declared bitrate is measured, the added rungs' are nominal, so a
    // bitrate comparison could pull a viewer off the sharpest rung for a blurrier one.
    const better = (v) => (v.height && playing && playing.height
      ? v.height > playing.height
      : v.bandwidth > (playing ? playing.bitrate : 0));
    if (!added.some((v) => better(v) && v.bandwidth <= estimate)) return;
    hls.rungReloads += 1;
    hls.loadSource(masterUrl);
  }, everyMs);
  hls.on(window.Hls.Events.DESTROYING, () => clearInterval(timer));
}
