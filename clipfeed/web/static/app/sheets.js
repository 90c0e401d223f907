// The comments sheet (replies, delete own) and the share sheet (copy link, share page).

import { api, knownUser } from "./api.js";
import { h, openSheet, timeAgo, toast, errorBox, spinner } from "./dom.js";

export function openComments(item, onCount) {
  const list = h("ol", { class: "comments", "aria-label": "Comments" });
  const input = h("input", { type: "text", name: "text", maxlength: "1000", required: true,
    placeholder: "Add a comment…", "aria-label": "Comment", autocomplete: "off" });
  const replyNote = h("p", { class: "reply-note", hidden: true });
  const form = h("form", { class: "comment-form" }, replyNote, h("div", { class: "row" }, input,
    h("button", { type: "submit", class: "btn primary", text: "Post" })));
  let replyTo = null;
  let count = item.comment_count || 0;
  const signedIn = Boolean(knownUser());
  if (!signedIn) {
    form.replaceChildren(h("p", { class: "muted" }, h("a", { href: "/login", "data-link": true, text: "Log in" }),
      " to comment."));
  }
  const content = h("div", { class: "sheet-body" }, list, form);
  const sheet = openSheet(`Comments`, content);

  function setReply(comment) {
    replyTo = comment;
    replyNote.hidden = !comment;
    replyNote.replaceChildren();
    if (comment) {
      const cancel = h("button", { type: "button", class: "link-btn", text: "cancel" });
      cancel.addEventListener("click", () => setReply(null));
      replyNote.append(`Replying to @${comment.author.handle} `, cancel);
      input.focus();
    }
  }

  function row(comment, isReply = false) {
    const me = knownUser();
    const repliesBox = h("ol", { class: "replies" });
    const actions = h("div", { class: "comment-actions" });
    if (!isReply && signedIn) {
      const reply = h("button", { type: "button", class: "link-btn", text: "Reply" });
      reply.addEventListener("click", () => setReply({ ...comment, box: repliesBox }));
      actions.append(reply);
    }
    if (!isReply && comment.reply_count > 0) {
      const more = h("button", { type: "button", class: "link-btn", text: `View ${comment.reply_count} ${comment.reply_count === 1 ? "reply" : "replies"}` });
      more.addEventListener("click", async () => {
        more.disabled = true;
        try {
          const page = await api(`comments/${encodeURIComponent(comment.id)}/replies`, { query: { limit: 50 } });
          repliesBox.replaceChildren(...page.items.map((r) => row(r, true)));
          more.remove();
        } catch (error) {
          more.disabled = false;
          toast(error.message, { error: true });
        }
      });
      actions.append(more);
    }
    if (me && comment.author && comment.author.id === me.id) {
      const del = h("button", { type: "button", class: "link-btn danger", text: "Delete",
        "aria-label": "Delete your comment" });
      del.addEventListener("click", async () => {
        try {
          await api(`comments/${encodeURIComponent(comment.id)}`, { method: "DELETE" });
          node.remove();
          if (!isReply) { count = Math.max(0, count - 1); onCount && onCount(count); }
        } catch (error) {
          toast(error.message, { error: true });
        }
      });
      actions.append(del);
    }
    const author = comment.author || { handle: "unknown" };
    const node = h("li", { class: "comment", "data-id": comment.id },
      h("div", { class: "comment-head" },
        h("a", { href: `/u/${encodeURIComponent(author.handle)}`, "data-link": true, class: "comment-author",
          text: `@${author.handle}` }),
        h("span", { class: "muted", text: timeAgo(comment.created_at) })),
      h("p", { class: "comment-text", text: comment.text }), actions, repliesBox);
    return node;
  }

  (async () => {
    list.replaceChildren(spinner());
    try {
      const page = await api(`videos/${encodeURIComponent(item.id)}/comments`, { query: { limit: 50 } });
      list.replaceChildren(...page.items.map((c) => row(c)));
      if (!page.items.length) list.append(h("li", { class: "muted empty-comments", text: "No comments yet. Say something nice." }));
    } catch (error) {
      list.replaceChildren(errorBox(error));
    }
  })();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const created = await api(`videos/${encodeURIComponent(item.id)}/comment`, {
        method: "POST", body: { text, parent_id: replyTo ? replyTo.id : null } });
      input.value = "";
      if (replyTo) {
        replyTo.box.append(row(created, true));
        setReply(null);
      } else {
        const empty = list.querySelector(".empty-comments");
        if (empty) empty.remove();
        list.prepend(row(created));
        count += 1;
        onCount && onCount(count);
      }
    } catch (error) {
      toast(error.message, { error: true });
    } finally {
      button.disabled = false;
    }
  });
  return sheet;
}

export function openShare(item, { onNotInterested } = {}) {
  const fallbackUrl = `${location.origin}/v/${encodeURIComponent(item.id)}`;
  const field = h("input", { type: "text", readonly: true, value: fallbackUrl, "aria-label": "Share link", class: "share-url" });
  const copy = h("button", { type: "button", class: "btn primary", text: "Copy link" });
  const open = h("a", { class: "btn", href: fallbackUrl, target: "_blank", rel: "noopener", text: "Open share page" });
  const notInterested = onNotInterested && knownUser()
    ? h("button", { type: "button", class: "btn not-interested", text: "Not interested" }) : null;
  const content = h("div", { class: "sheet-body share-body" }, field, h("div", { class: "row" }, copy, open, notInterested));
  const sheet = openSheet("Share", content);
  if (notInterested) {
    notInterested.addEventListener("click", async () => {
      notInterested.disabled = true;
      try {
        await api(`videos/${encodeURIComponent(item.id)}/not-interested`, { method: "POST" });
        sheet.close();
        toast("Got it: fewer videos like this.");
        onNotInterested();
      } catch (error) {
        notInterested.disabled = false;
        toast(error.status === 404 ? "This server doesn't take that feedback yet." : error.message, { error: true });
      }
    });
  }
  let shareUrl = fallbackUrl;
  api(`videos/${encodeURIComponent(item.id)}/share`, { method: "POST", body: { channel: "link" } })
    .then((result) => {
      if (result && result.share_url) {
        shareUrl = result.share_url;
        field.value = shareUrl;
        open.href = shareUrl;
      }
    })
    .catch(() => null);
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(shareUrl);
      toast("Link copied");
    } catch {
      field.select();
      toast("Press Ctrl+C to copy the selected link");
    }
  });
  return sheet;
}
