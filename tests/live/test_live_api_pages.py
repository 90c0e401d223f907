"""The Go-live and live pages: shells under the strict CSP, their scripts served, ids checked."""

from __future__ import annotations

import re


def test_pages_are_csp_clean_shells(client):
    for path in ("/live/go", "/live/abc123"):
        response = client.get(path)
        assert response.status_code == 200
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page = response.text
        # No inline script or style: every <script> has a src, no style attributes or blocks.
        assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", page))
        assert "<style" not in page and " style=" not in page
        assert "/static/vendor/hls.min.js" in page
    assert 'data-stream-id="abc123"' in client.get("/live/abc123").text
    hostile = client.get("/live/%22%3E%3Cscript%3E")
    assert hostile.status_code == 404 and "<script>alert" not in hostile.text and 'data-stream-id=""' in hostile.text

    for name, kind in (("live.js", "javascript"), ("go_live.js", "javascript"), ("player.js", "javascript"),
                       ("live.css", "css")):
        asset = client.get(f"/static/live/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
    assert client.get("/static/live/nope.js").status_code == 404
    assert client.get("/static/live/..%2Fpages.py").status_code == 404
    # The web client's own static files are still served by the /static mount.
    assert client.get("/static/app.css").status_code == 200
