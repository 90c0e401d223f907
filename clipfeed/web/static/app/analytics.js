// Creator analytics: views per day over the last 30 days across your videos and, per video, the
// numbers, its own views per day and the retention curve. Charts are plain SVG drawn here, no
// chart library; the series come from the API (/me/analytics, /videos/{id}/analytics).

import { api, knownUser } from "./api.js";
import { h, svg, formatCount, errorBox } from "./dom.js";

const W = 640;
const H = 220;
const PAD = { left: 40, right: 12, top: 12, bottom: 28 };

function frame(title) {
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title });
  const desc = svg("title");
  desc.textContent = title;
  chart.append(desc);
  return chart;
}

function axes(chart, maxY, labels, formatY) {
  const innerH = H - PAD.top - PAD.bottom;
  for (let i = 0; i <= 4; i += 1) {
    const y = PAD.top + innerH - (innerH * i) / 4;
    chart.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "grid-line" }));
    const text = svg("text", { x: PAD.left - 6, y: y + 4, class: "axis-label", "text-anchor": "end" });
    text.textContent = formatY((maxY * i) / 4);
    chart.append(text);
  }
  const innerW = W - PAD.left - PAD.right;
  const step = Math.max(1, Math.ceil(labels.length / 8));
  labels.forEach((label, i) => {
    if (i % step) return;
    const x = PAD.left + (labels.length === 1 ? innerW / 2 : (innerW * i) / (labels.length - 1));
    const text = svg("text", { x, y: H - 8, class: "axis-label", "text-anchor": "middle" });
    text.textContent = label;
    chart.append(text);
  });
}

export function barChart(title, labels, values, keys = labels) {
  const chart = frame(title);
  const maxY = Math.max(4, ...values);  // whole-number gridlines for small counts
  axes(chart, maxY, labels, (v) => formatCount(Math.round(v)));
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const slot = innerW / Math.max(1, values.length);
  values.forEach((value, i) => {
    const height = (innerH * value) / maxY;
    const x = labels.length === 1 ? PAD.left + innerW / 2 - slot * 0.3 : PAD.left + (innerW * i) / Math.max(1, values.length - 1) - slot * 0.3;
    const bar = svg("rect", { x: Math.max(PAD.left, x), y: PAD.top + innerH - height, width: Math.max(2, slot * 0.6),
      height: Math.max(0, height), class: "bar-rect", "data-key": keys[i], "data-value": value });
    const tip = svg("title");
    tip.textContent = `${labels[i]}: ${value} views`;
    bar.append(tip);
    chart.append(bar);
  });
  return chart;
}

export function lineChart(title, values) {
  const chart = frame(title);
  axes(chart, 1, values.map((_, i) => `${i}s`), (v) => `${Math.round(v * 100)}%`);
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const points = values.map((v, i) => [PAD.left + (values.length === 1 ? 0 : (innerW * i) / (values.length - 1)),
    PAD.top + innerH - innerH * Math.max(0, Math.min(1, v))]);
  if (points.length) {
    const d = points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    chart.append(svg("path", { d: `${d} L${points[points.length - 1][0]},${PAD.top + innerH} L${PAD.left},${PAD.top + innerH} Z`, class: "area" }));
    chart.append(svg("path", { d, class: "line" }));
  }
  return chart;
}

// views_by_day ([{date, views}], oldest first) as bars labelled MM-DD.
function viewsChart(title, series) {
  return barChart(title, series.map((d) => d.date.slice(5)), series.map((d) => d.views), series.map((d) => d.date));
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("strong", { text: value }), h("span", { class: "muted", text: label }));
}

async function videoDetails(box, video) {
  try {
    const a = await api(`videos/${encodeURIComponent(video.id)}/analytics`);
    box.replaceChildren(
      h("h2", { class: "section-title", text: video.caption ? `“${video.caption.slice(0, 60)}”` : "Video" }),
      h("div", { class: "stats" },
        stat("Views", formatCount(a.views)), stat("Unique viewers", formatCount(a.unique_viewers)),
        stat("Avg. watch", `${(a.avg_watch_ms / 1000).toFixed(1)} s`),
        stat("Completion", `${Math.round(a.completion_rate * 100)}%`), stat("Likes", formatCount(a.likes)),
        stat("Comments", formatCount(a.comments)), stat("Shares", formatCount(a.shares)),
        stat("Follows gained", formatCount(a.follows_gained))),
      h("h3", { text: "Views, last 30 days" }),
      viewsChart("Views of this video per day, last 30 days", a.views_by_day || []),
      h("h3", { text: "Retention" }),
      a.views ? lineChart("Share of views still watching at each second", a.retention)
        : h("p", { class: "muted", text: "No views yet: the retention curve appears after the first view." }));
  } catch (error) {
    box.replaceChildren(errorBox(error));
  }
}

export async function analyticsPage(view, videoId) {
  document.title = "Analytics · clipfeed";
  const me = knownUser();
  if (!me) {
    view.replaceChildren(h("div", { class: "page narrow" }, h("h1", { text: "Analytics" }),
      h("p", {}, h("a", { href: "/login?next=/analytics", "data-link": true, text: "Log in" }), " to see your analytics.")));
    return null;
  }
  const videos = [];
  let cursor = null;
  do {
    const page = await api(`users/${encodeURIComponent(me.id)}/videos`, { query: { limit: 50, cursor } });
    videos.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && videos.length < 500);
  let overTime;
  try {
    const overall = await api("me/analytics");
    overTime = viewsChart("Views of all your videos per day, last 30 days", overall.views_by_day);
    overTime.classList.add("views-over-time");
  } catch (error) {
    overTime = errorBox(error);
  }
  const details = h("section", { class: "analytics-video", "aria-live": "polite" });
  const picker = h("select", { id: "analytics-video", "aria-label": "Video" },
    videos.map((v) => h("option", { value: v.id, selected: v.id === videoId, text: v.caption ? v.caption.slice(0, 50) : v.id })));
  picker.addEventListener("change", () => {
    history.replaceState({}, "", `/analytics/${encodeURIComponent(picker.value)}`);
    videoDetails(details, videos.find((v) => v.id === picker.value));
  });
  const total = videos.reduce((sum, v) => sum + (v.view_count || 0), 0);
  view.replaceChildren(h("div", { class: "page" }, h("h1", { text: "Creator analytics" }),
    h("div", { class: "stats" }, stat("Videos", formatCount(videos.length)), stat("Total views", formatCount(total)),
      stat("Likes", formatCount(videos.reduce((s, v) => s + (v.like_count || 0), 0)))),
    h("h2", { class: "section-title", text: "Views over time (last 30 days)" }),
    overTime,
    videos.length ? h("label", { for: "analytics-video", text: "Video" }) : null, videos.length ? picker : null, details));
  const chosen = videos.find((v) => v.id === videoId) || videos[0];
  if (chosen) {
    picker.value = chosen.id;
    await videoDetails(details, chosen);
  }
  return null;
}
