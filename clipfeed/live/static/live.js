// /live/{id}: the low-latency player and the chat. Untrusted text only ever goes through
// textContent; emote images only from the server's own URLs.
import { playLive } from "/static/live/player.js";

const $ = (id) => document.getElementById(id);
const streamId = $("live").dataset.streamId || "";
const log = $("chat-log");
let socket = null;
let playing = false;
let lastId = null; // the newest message seen: a rejoin asks for what came after it

function line(node) {
  const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.appendChild(node);
  while (log.children.length > 300) log.removeChild(log.firstChild);
  if (nearBottom) log.scrollTop = log.scrollHeight;
}

function system(text) {
  const li = document.createElement("li");
  li.className = "system";
  li.textContent = text;
  line(li);
}

function renderMessage(frame) {
  if (lastId === null || frame.id > lastId) lastId = frame.id;
  const li = document.createElement("li");
  li.dataset.id = frame.id;
  for (const badge of frame.badges || []) {
    const span = document.createElement("span");
    span.className = "badge";
    span.textContent = badge;
    li.appendChild(span);
  }
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = frame.user.display_name || frame.user.handle;
  li.appendChild(author);
  for (const part of frame.parts || []) {
    if (part.type === "emote" && part.url && part.url.startsWith("/api/v1/live/emotes/")) {
      const img = document.createElement("img");
      img.className = "emote";
      img.src = part.url;
      img.alt = `:${part.name}:`;
      li.appendChild(img);
    } else {
      li.appendChild(document.createTextNode(part.type === "emote" ? part.emoji : part.text));
    }
  }
  line(li);
}

function onFrame(frame) {
  switch (frame.type) {
    case "backlog": frame.messages.forEach(renderMessage); break;
    case "message": renderMessage(frame); break;
    case "message_deleted": {
      const li = log.querySelector(`li[data-id="${CSS.escape(frame.id)}"]`);
      if (li) li.remove();
      break;
    }
    case "error": $("chat-error").textContent = frame.message; break;
    case "slow_mode": system(frame.seconds ? `Slow mode: ${frame.seconds}s` : "Slow mode off"); break;
    case "stream_ended": system("The stream has ended."); refreshState(); break;
    case "stream_live": refreshState(); break;
    default: break;
  }
}

function connectChat() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const after = lastId ? `?after=${encodeURIComponent(lastId)}` : "";
  socket = new WebSocket(`${scheme}://${location.host}/api/v1/live/${encodeURIComponent(streamId)}/chat${after}`);
  socket.addEventListener("message", (event) => {
    let data;
    try { data = JSON.parse(event.data); } catch (_) { return; /* ignore a bad frame */ }
    // Messages the room fanned out together arrive as one array, in order.
    for (const frame of Array.isArray(data) ? data : [data]) {
      try { onFrame(frame); } catch (_) { /* one bad frame never stops the others */ }
    }
  });
  socket.addEventListener("close", (event) => {
    if (event.code !== 4404) setTimeout(connectChat, 2000);
  });
}

async function refreshState() {
  const response = await fetch(`/api/v1/live/${encodeURIComponent(streamId)}`, {
    credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" },
  });
  if (!response.ok) { $("live-status").textContent = "not available"; return; }
  const state = await response.json();
  $("live-title").textContent = state.title || "Live";
  $("live-status").textContent = state.status;
  $("live-viewers").textContent = String(state.viewers);
  if (state.status === "live" && !playing) {
    playing = true;
    playLive($("live-player"), state.playback_url);
  }
}

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("chat-text");
  if (!socket || socket.readyState !== WebSocket.OPEN || !input.value.trim()) return;
  $("chat-error").textContent = "";
  socket.send(JSON.stringify({ type: "message", text: input.value }));
  input.value = "";
});

if (streamId) {
  refreshState();
  setInterval(refreshState, 5000);
  connectChat();
}
