// Upload: pick or drop a file, caption, visibility, optional sound; tus-js-client with 8 MB
// chunks, progress, pause/resume, resume after a reload (tus fingerprint in localStorage), then
// processing progress until playable, then the video. Rejections show the server's reason.

import { api, knownUser } from "./api.js";
import { h, toast, go } from "./dom.js";
import { Pager } from "./pager.js";

const CHUNK_BYTES = 8 * 1024 * 1024;
const VIDEO_IDS = "clipfeed.upload-videos";  // tus upload URL -> video id (no POST on a resume)
const POLL_MS = 1000;

function loadTus() {
  if (window.tus) return Promise.resolve(window.tus);
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = "/static/vendor/tus.min.js";
    script.onload = () => resolve(window.tus);
    script.onerror = () => reject(new Error("The uploader failed to load. Reload the page to try again."));
    document.head.append(script);
  });
}

function videoIds() {
  try { return JSON.parse(localStorage.getItem(VIDEO_IDS) || "{}"); } catch { return {}; }
}

function rememberVideoId(uploadUrl, videoId) {
  const ids = videoIds();
  ids[uploadUrl] = videoId;
  try { localStorage.setItem(VIDEO_IDS, JSON.stringify(ids)); } catch { /* only resume is lost */ }
}

function megabytes(bytes) {
  return `${(bytes / 1048576).toFixed(1)} MB`;
}

export function serverReason(error) {
  const response = error && error.originalResponse;
  if (response) {
    try {
      const body = JSON.parse(response.getBody() || "{}");
      if (body.error && body.error.message) return body.error.message;
    } catch { /* not JSON */ }
    const status = response.getStatus && response.getStatus();
    if (status === 401) return "Your session has expired. Log in again to upload.";
    if (status) return `The upload was refused (HTTP ${status}).`;
  }
  return "The upload was interrupted: check your connection, then press Resume.";
}

export async function uploadPage(view) {
  document.title = "Upload · clipfeed";
  if (!knownUser()) {
    view.replaceChildren(h("div", { class: "page narrow" }, h("h1", { text: "Upload" }),
      h("p", {}, h("a", { href: "/login?next=/upload", "data-link": true, text: "Log in" }), " to upload videos.")));
    return null;
  }
  const tus = await loadTus();
  let file = null;
  let upload = null;
  let videoId = null;
  let pollTimer = 0;
  let pager = null;
  let closed = false;

  const fileInput = h("input", { type: "file", id: "upload-file", accept: "video/*", class: "visually-hidden" });
  const fileName = h("span", { class: "file-name", text: "No file chosen" });
  const drop = h("label", { class: "dropzone", for: "upload-file", tabindex: "-1" },
    h("strong", { text: "Choose a video" }), h("span", { class: "muted", text: " or drop it here (up to 60 s)" }), fileName);
  const caption = h("textarea", { id: "upload-caption", rows: "3", maxlength: "2200",
    placeholder: "Describe your video. #hashtags and @mentions work." });
  const visibility = h("select", { id: "upload-visibility" },
    [["public", "Everyone"], ["followers", "Followers"], ["unlisted", "Anyone with the link"], ["private", "Only me"]]
      .map(([value, label]) => h("option", { value, text: label })));
  const soundId = h("input", { id: "upload-sound", placeholder: "optional", autocomplete: "off", maxlength: "32" });
  const start = h("button", { type: "submit", id: "upload-start", class: "btn primary wide", text: "Post", disabled: true });
  const pause = h("button", { type: "button", id: "upload-pause", class: "btn", text: "Pause", hidden: true });
  const bar = h("progress", { id: "upload-progress", max: "100", value: "0", hidden: true, "aria-label": "Upload progress" });
  const barText = h("p", { class: "muted", id: "upload-progress-text", "aria-live": "polite" });
  const errorBox = h("p", { id: "upload-error", class: "form-error", role: "alert", hidden: true });
  const resumeNote = h("p", { class: "notice", id: "upload-resume", hidden: true });
  const processing = h("progress", { id: "processing-progress", max: "100", value: "0", hidden: true, "aria-label": "Processing progress" });
  const processingText = h("p", { id: "processing-text", "aria-live": "polite" });
  const result = h("div", { id: "upload-result", class: "upload-result" });

  const form = h("form", { class: "upload-form" },
    fileInput, drop,
    h("label", { for: "upload-caption", text: "Caption" }), caption,
    h("label", { for: "upload-visibility", text: "Who can watch" }), visibility,
    h("label", { for: "upload-sound", text: "Sound id" }), soundId,
    errorBox, start);
  const status = h("section", { class: "upload-status", "aria-label": "Upload status" },
    bar, barText, pause, processing, processingText, result);
  view.replaceChildren(h("div", { class: "page narrow" }, h("h1", { text: "Upload a video" }), resumeNote, form, status,
    h("p", { class: "muted go-live" }, "Streaming from OBS or a phone app? ",
      h("a", { href: "/live/go", text: "Go live" }))));

  // An unfinished upload from an earlier visit (or a reload): say so; picking the same file resumes.
  try {
    const previous = await tus.defaultOptions.urlStorage.findAllUploads();
    if (previous.length) {
      const last = previous[previous.length - 1];
      const name = (last.metadata && last.metadata.filename) || "a video";
      resumeNote.textContent = `You have an unfinished upload of ${name}. Choose the same file to resume where it stopped.`;
      resumeNote.hidden = false;
    }
  } catch { /* storage unavailable: uploads still work, without resume */ }

  function choose(picked) {
    if (!picked) return;
    file = picked;
    fileName.textContent = `${picked.name} · ${megabytes(picked.size)}`;
    start.disabled = Boolean(upload);
    errorBox.hidden = true;
  }
  fileInput.addEventListener("change", () => choose(fileInput.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer.files[0]);
  });

  function fail(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    pause.hidden = true;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!file || upload) return;
    errorBox.hidden = true;
    const metadata = { filename: file.name, filetype: file.type || "video/mp4", caption: caption.value,
      visibility: visibility.value };
    if (soundId.value.trim()) metadata.sound_id = soundId.value.trim();
    upload = new tus.Upload(file, {
      endpoint: "/api/v1/uploads",
      chunkSize: CHUNK_BYTES,
      retryDelays: [0, 1000, 3000, 5000],
      metadata,
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      onShouldRetry: (error) => {
        const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
        return !status || status >= 500 || status === 423 || status === 409;
      },
      onAfterResponse: (request, response) => {
        const id = response.getHeader("Clipfeed-Video-Id");
        if (id && request.getMethod() === "POST") {
          videoId = id;
          const url = response.getHeader("Location");
          if (url) rememberVideoId(new URL(url, location.href).href, id);
        }
      },
      onProgress: (sent, total) => {
        const percent = total ? (sent / total) * 100 : 0;
        bar.value = percent;
        barText.textContent = `Uploading… ${Math.floor(percent)}% (${megabytes(sent)} of ${megabytes(total)})`;
      },
      onError: (error) => {
        const reason = serverReason(error);
        const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
        fail(reason);
        barText.textContent = "Upload stopped.";
        if (status && status < 500) {
          upload = null;  // refused for good: let the person fix it and post again
          start.disabled = false;
        } else {
          pause.hidden = false;
          pause.textContent = "Resume";
        }
      },
      onSuccess: () => {
        pause.hidden = true;
        bar.value = 100;
        barText.textContent = "Uploaded.";
        if (!videoId) videoId = videoIds()[new URL(upload.url, location.href).href] || null;
        if (videoId) watchProcessing(videoId);
        else processingText.textContent = "Uploaded. Your video will appear on your profile once it's processed.";
      },
    });
    start.disabled = true;
    bar.hidden = false;
    pause.hidden = false;
    pause.textContent = "Pause";
    barText.textContent = "Starting…";
    try {
      const previous = await upload.findPreviousUploads();
      if (previous.length) {
        upload.resumeFromPreviousUpload(previous[0]);
        videoId = videoIds()[new URL(previous[0].uploadUrl, location.href).href] || null;
        barText.textContent = "Resuming your earlier upload…";
        resumeNote.hidden = true;
      }
    } catch { /* no storage: a fresh upload */ }
    upload.start();
  });

  pause.addEventListener("click", () => {
    if (!upload) return;
    if (pause.textContent === "Pause") {
      upload.abort();
      pause.textContent = "Resume";
      barText.textContent = `Paused at ${Math.floor(bar.value)}%.`;
    } else {
      errorBox.hidden = true;
      pause.textContent = "Pause";
      upload.start();
    }
  });

  async function watchProcessing(id) {
    processing.hidden = false;
    processingText.textContent = "Processing…";
    let video;
    try {
      video = await api(`videos/${encodeURIComponent(id)}`);
    } catch (error) {
      processingText.textContent = error.message;
      if (!closed) pollTimer = setTimeout(() => watchProcessing(id), 2 * POLL_MS);
      return;
    }
    if (closed) return;
    if (video.status === "rejected" || video.status === "failed") {
      processing.hidden = true;
      processingText.textContent = "";
      fail(video.rejection_reason || (video.status === "failed" ? "Processing failed." : "This video was not accepted."));
      barText.textContent = "Choose another file to try again.";
      upload = null;
      start.disabled = true;
      return;
    }
    if (video.urls && video.urls.hls) {
      processing.hidden = true;
      processingText.textContent = "Your video is live.";
      showVideo(video);
      return;
    }
    processing.value = Number(video.progress) || 0;
    processingText.textContent = `Processing… ${Math.floor(Number(video.progress) || 0)}%`;
    pollTimer = setTimeout(() => watchProcessing(id), POLL_MS);
  }

  async function showVideo(video) {
    pager = new Pager({ items: [video], label: "Your new video", loop: false });
    const me = knownUser();
    result.replaceChildren(h("div", { class: "upload-preview" }, pager.root),
      h("div", { class: "row" },
        h("a", { class: "btn", href: me ? `/u/${encodeURIComponent(me.handle)}` : "/", "data-link": true, text: "Go to your profile" }),
        h("button", { type: "button", class: "btn", text: "Upload another", onclick: () => go("/upload", { replace: true }) })));
    await pager.start();
    toast("Your video is ready");
  }

  return () => {
    closed = true;
    clearTimeout(pollTimer);
    if (upload) upload.abort();
    if (pager) pager.destroy();
  };
}
