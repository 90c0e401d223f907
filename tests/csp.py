"""What a strict Content-Security-Policy needs of a page, checked on the served HTML: no inline
scripts, styles or event handlers, and every script loaded from /static/."""

from __future__ import annotations

from html.parser import HTMLParser


def csp_directives(header: str) -> dict[str, list[str]]:
    """`"default-src 'self'; img-src 'self' data:"` -> {"default-src": ["'self'"], ...}."""
    parts = (part.strip() for part in header.split(";"))
    return {part.split()[0]: part.split()[1:] for part in parts if part}


class InlineCodeAudit(HTMLParser):
    """Feed it a page; `problems` lists what the policy would block, `scripts` the script srcs."""

    def __init__(self):
        super().__init__()
        self.problems: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = {name.lower() for name, _ in attrs}
        if "style" in names or tag == "style":
            self.problems.append(f"inline style on <{tag}>")
        self.problems += [f"inline handler {name} on <{tag}>" for name in names if name.startswith("on")]
        if tag == "script":
            src = dict(attrs).get("src")
            if not src or not src.startswith("/static/"):
                self.problems.append(f"script without a /static src: {attrs}")
            self.scripts.append(src or "")
            self._in_script = True

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.problems.append(f"inline script body: {data[:60]!r}")


def audit_page(html: str) -> InlineCodeAudit:
    audit = InlineCodeAudit()
    audit.feed(html)
    return audit
