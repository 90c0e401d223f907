"""Search over real HTTP on each backend: prefix and typo matching, popularity blending,
visibility, blocks, index maintenance by the database triggers, users, bad input."""

from __future__ import annotations

import pytest

from tests.feed import factories as f


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def search(client, q: str, headers: dict | None = None, **params) -> list[str]:
    return _ids(client.get("/api/v1/search/videos", params={"q": q, **params}, headers=headers or {}))


def search_users(client, q: str, headers: dict | None = None) -> list[str]:
    return _ids(client.get("/api/v1/search/users", params={"q": q}, headers=headers or {}))


def test_prefix_typo_hashtag_sound_and_handle_matches(client, settings):
    chef = f.make_user(settings, "chef_marco")
    pasta = f.make_video(settings, chef["id"], "Homemade pasta carbonara in ten minutes #italianfood")
    dance = f.make_video(settings, chef["id"], "Dancing in the rain #weekend")
    sound = f.make_sound(settings, chef["id"], "Summer Vibes Remix")
    vibes = f.make_video(settings, chef["id"], "nothing to see", sound_id=sound)

    assert search(client, "danc") == [dance]                      # prefix
    assert search(client, "pastta") == [pasta]                    # typo (one insertion)
    assert search(client, "carbnoara") == [pasta]                 # typo (swapped letters)
    assert search(client, "#italianfood") == [pasta]              # hashtag
    assert search(client, "italian") == [pasta]                   # hashtag prefix
    assert search(client, "vibes") == [vibes]                     # sound title
    assert set(search(client, "chef_marco")) == {pasta, dance, vibes}  # creator handle
    assert search(client, "PASTA Carbonara") == [pasta]           # several words, any case
    assert search(client, "pasta zzzzqqq") == [pasta]             # no AND match: any word
    assert search(client, "xylophone") == []


def test_equally_relevant_videos_rank_by_popularity_and_page_by_cursor(client, settings):
    owner = f.make_user(settings)
    quiet = f.make_video(settings, owner["id"], "Sunset timelapse over the bay")
    loved = f.make_video(settings, owner["id"], "Sunset timelapse over the bay", like_count=50, view_count=400)
    middle = f.make_video(settings, owner["id"], "Sunset timelapse over the bay", like_count=5, view_count=20)
    assert search(client, "sunset timelapse") == [loved, middle, quiet]

    first = client.get("/api/v1/search/videos", params={"q": "sunset", "limit": 2}).json()
    assert [v["id"] for v in first["items"]] == [loved, middle] and first["next_cursor"]
    second = client.get("/api/v1/search/videos", params={"q": "sunset", "limit": 2, "cursor": first["next_cursor"]})
    assert _ids(second) == [quiet] and second.json()["next_cursor"] is None
    assert first["items"][0]["like_count"] == 50


def test_only_ready_public_videos_are_found_and_the_index_follows_changes(client, settings):
    owner = f.make_user(settings, "hidden_maker")
    public = f.make_video(settings, owner["id"], "marmalade recipe")
    f.make_video(settings, owner["id"], "marmalade secret", visibility="private")
    f.make_video(settings, owner["id"], "marmalade by link", visibility="unlisted")
    f.make_video(settings, owner["id"], "marmalade for fans", visibility="followers")
    processing = f.make_video(settings, owner["id"], "marmalade soon", status="processing", published_at=None)
    f.make_video(settings, owner["id"], "marmalade refused", status="rejected", published_at=None)
    fan = f.make_user(settings)
    f.follow(settings, fan["id"], owner["id"])
    assert search(client, "marmalade") == [public]
    assert search(client, "marmalade", fan["headers"]) == [public]   # followers-only is not searchable

    f.update_video(settings, processing, status="ready")               # becomes ready: indexed
    assert set(search(client, "marmalade")) == {public, processing}
    f.update_video(settings, public, visibility="private")             # hidden: gone
    assert search(client, "marmalade") == [processing]
    f.update_video(settings, processing, caption="quince jelly #preserves")  # caption change
    assert search(client, "marmalade") == []
    assert search(client, "quince") == [processing]
    assert search(client, "preserves") == [processing]
    f.update_user(settings, owner["id"], handle="jam_queen")           # handle change
    assert search(client, "jam_queen") == [processing]
    assert search(client, "hidden_maker") == []
    f.delete_video(settings, processing)                               # deleted: gone
    assert search(client, "quince") == []


def test_blocked_creators_are_left_out_for_the_signed_in_viewer(client, settings):
    viewer = f.make_user(settings)
    blocked = f.make_user(settings)
    blocker = f.make_user(settings)
    fine = f.make_user(settings)
    a = f.make_video(settings, blocked["id"], "origami crane tutorial")
    b = f.make_video(settings, blocker["id"], "origami frog tutorial")
    c = f.make_video(settings, fine["id"], "origami boat tutorial")
    f.block(settings, viewer["id"], blocked["id"])
    f.block(settings, blocker["id"], viewer["id"])
    assert search(client, "origami", viewer["headers"]) == [c]
    assert set(search(client, "origami")) == {a, b, c}
    assert search_users(client, blocked["handle"], viewer["headers"]) == []
    assert search_users(client, blocker["handle"], viewer["headers"]) == []
    assert search_users(client, fine["handle"], viewer["headers"]) == [fine["id"]]


def test_user_search_by_handle_and_display_name_with_prefix_typos_and_popularity(client, settings):
    star = f.make_user(settings, "bella_sings", display_name="Bella Rossi", follower_count=5000)
    fan = f.make_user(settings, "bella_fan", display_name="Big Fan", follower_count=3)
    other = f.make_user(settings, "tom_draws", display_name="Tom Ink")
    assert search_users(client, "bella") == [star["id"], fan["id"]]       # popularity breaks the tie
    assert search_users(client, "bella_fan")[0] == fan["id"]              # the exact handle first
    assert search_users(client, "@bellasi") == [star["id"]]               # handle without separators
    assert search_users(client, "rossi") == [star["id"]]                  # display name
    assert search_users(client, "ros") == [star["id"]]                    # prefix
    assert search_users(client, "tom drwas") == [other["id"]]             # typo
    body = client.get("/api/v1/search/users", params={"q": "tom"}).json()["items"][0]
    assert body["handle"] == "tom_draws" and body["display_name"] == "Tom Ink"
    f.update_user(settings, other["id"], display_name="Thomas Pencil")
    assert search_users(client, "pencil") == [other["id"]]
    assert search_users(client, "ink") == []


def test_markup_in_queries_and_captions_is_plain_text(client, settings):
    owner = f.make_user(settings)
    video = f.make_video(settings, owner["id"], "<script>alert(1)</script> \"quoted\" OR NOT near(")
    assert search(client, "<script>") == [video]
    assert search(client, '"quoted" OR') == [video]
    assert search(client, "NOT near(") == [video]
    assert search(client, "*") == []
    assert search(client, "'); DROP TABLE videos; --") == []
    assert client.get("/api/v1/search/videos", params={"q": "script"}).json()["items"][0]["caption"].startswith("<script>")


@pytest.mark.parametrize("path", ["/api/v1/search/videos", "/api/v1/search/users"])
def test_bad_input_is_422_with_the_field(client, path):
    for params, field in [({}, "q"), ({"q": ""}, "q"), ({"q": "   "}, "q"), ({"q": "x" * 201}, "q"),
                          ({"q": "a", "limit": 0}, "limit"), ({"q": "a", "limit": 51}, "limit"),
                          ({"q": "a", "limit": "many"}, "limit"), ({"q": "a", "cursor": "!!!"}, "cursor"),
                          ({"q": "a", "cursor": "eyJvIjogLTF9"}, "cursor")]:
        response = client.get(path, params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["field"] == field, (params, response.text)
