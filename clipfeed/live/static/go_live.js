// /live/go: create a stream, show the ingest URL and the key (once), preview, rotate, end.
import { playLive } from "/static/live/player.js";

const $ = (id) => document.getElementById(id);
let stream = null;
let previewing = false;

async function api(method, path, body) {
  const response = await fetch(path, {
    method, credentials: "same-origin", cache: "no-store",
    headers: { Accept: "application/json", "Content-Type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((data.error && data.error.message) || `HTTP ${response.status}`);
  return data;
}

function showKey(data) {
  $("ingest-url").textContent = data.ingest_url;
  $("stream-key").textContent = data.stream_key;
  $("watch-link").href = `/live/${encodeURIComponent(data.stream_id)}`;
  $("obs").hidden = false;
}

async function refresh() {
  if (!stream) return;
  try {
    const state = await api("GET", `/api/v1/live/${encodeURIComponent(stream.stream_id)}`);
    $("stream-status").textContent = state.status;
    $("viewers").textContent = String(state.viewers);
    if (state.status === "live" && !previewing) {
      previewing = true;
      playLive($("preview"), state.playback_url);
    }
  } catch (error) { $("go-error").textContent = error.message; }
}

$("start-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    stream = await api("POST", "/api/v1/live/start", { title: $("title").value });
    showKey(stream);
    $("start-form").hidden = true;
    setInterval(refresh, 2000);
  } catch (error) { $("go-error").textContent = error.message; }
});

$("rotate").addEventListener("click", async () => {
  try { showKey(await api("POST", `/api/v1/live/${encodeURIComponent(stream.stream_id)}/rotate-key`)); }
  catch (error) { $("go-error").textContent = error.message; }
});

$("end").addEventListener("click", async () => {
  try { await api("POST", `/api/v1/live/${encodeURIComponent(stream.stream_id)}/end`); refresh(); }
  catch (error) { $("go-error").textContent = error.message; }
});
