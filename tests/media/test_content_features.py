"""extract_content_features on tiny clips generated with lavfi (cartoon faces drawn with OpenCV,
and real photographs from scikit-image's sample images): colours, motion, cuts, faces, spectrum and
tempo come out as the generated content dictates; degenerate and hostile inputs give finite numbers
or ContentFeaturesError; nothing is left in the work folder."""

from __future__ import annotations

import json
import math
from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np
import pytest

from clipfeed.media.content_features import (
    AUDIO_FEATURE_NAMES,
    FEATURE_DOCS,
    FEATURE_NAMES,
    NAMES_VERSION,
    ContentFeatures,
    ContentFeaturesError,
    extract_content_features,
)
from clipfeed.media.ffmpeg import FFmpegError, FFmpegTimeout
from tests import mediagen
from tests.media.test_probe import connection_attempted

SIZE = "160x90"


def _encode(path: Path, video: list[str], audio: str | None, seconds: float) -> Path:
    """``video``: ffmpeg input args for the picture (a lavfi source or a filter graph)."""
    args = [*video]
    if audio:
        args += ["-f", "lavfi", "-i", audio]
    args += ["-t", f"{seconds}", "-map", "0:v" if video[0] == "-f" else "[v]"]
    if audio:
        args += ["-map", "1:a" if video[0] == "-f" else "0:a", "-c:a", "aac", "-b:a", "96k", "-ac", "2"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)]
    mediagen.ffmpeg(*args)
    return path


def _colour(name: str) -> list[str]:
    return ["-f", "lavfi", "-i", f"color=c={name}:s={SIZE}:r=30"]


def _sine(hz: int) -> str:
    return f"sine=frequency={hz}:sample_rate=44100"


def _clicks(bpm: float) -> str:
    """30 ms bursts of a 1 kHz tone, one every beat."""
    return f"aevalsrc='0.8*sin(2*PI*1000*t)*lt(mod(t\\,{60 / bpm:.6f})\\,0.03)':s=44100"


def _draw_face(canvas: np.ndarray, centre: tuple[int, int], width: int) -> None:
    """A cartoon frontal face (skin oval, hair, brows, eyes, nose shade, mouth): the light and dark
    bands a Viola-Jones cascade looks for, drawn rather than photographed."""
    x, y = centre
    w = width / 0.64  # the oval is 0.64 of the drawing's box wide

    def ellipse(dx: float, dy: float, ax: float, ay: float, shade: int) -> None:
        cv2.ellipse(canvas, (int(x + dx * w), int(y + dy * w)), (max(1, int(ax * w)), max(1, int(ay * w))),
                    0, 0, 360, (shade, shade, shade), -1)

    ellipse(0, 0, 0.32, 0.42, 190)
    ellipse(0, -0.33, 0.33, 0.14, 30)
    for side in (-0.13, 0.13):
        ellipse(side, -0.15, 0.08, 0.02, 60)
        ellipse(side, -0.08, 0.06, 0.03, 50)
    ellipse(0, 0.07, 0.03, 0.06, 160)
    ellipse(0, 0.2, 0.1, 0.03, 80)


def _faces_clip(path: Path, faces: list[tuple[float, float, float]], seconds: float = 4) -> Path:
    """A 360x640 portrait clip of cartoon faces, each (centre x, centre y, width) relative to the
    frame's width, drifting a little so the encoder sees motion."""
    picture = np.full((700, 400, 3), 45, np.uint8)
    for fx, fy, fw in faces:
        _draw_face(picture, (int(20 + fx * 360), int(30 + fy * 360)), int(fw * 360))
    picture = cv2.GaussianBlur(picture, (0, 0), 1.5)
    still = path.with_suffix(".png")
    cv2.imwrite(str(still), picture)
    graph = "[0:v]crop=360:640:x='20+10*sin(t)':y='30+10*cos(t)',format=yuv420p[v]"
    return _encode(path, ["-loop", "1", "-framerate", "30", "-i", str(still), "-filter_complex", graph], None, seconds)


def _photo_clip(path: Path, photo: str, seconds: float = 4) -> Path:
    """A 350x630 portrait clip of one of scikit-image's sample photographs (public domain, in its
    wheel: nothing is downloaded), scaled to the width, letterboxed and drifting a little."""
    still = files("skimage") / "data" / f"{photo}.png"
    graph = ("[0:v]scale=360:-2,pad=360:640:0:(oh-ih)/2:color=0x202020,"
             "crop=350:630:x='5+5*sin(t)':y='5+5*cos(t)',format=yuv420p[v]")
    return _encode(path, ["-loop", "1", "-framerate", "30", "-i", str(still), "-filter_complex", graph], None, seconds)


CLIPS = {
    "red": lambda p: _encode(p, _colour("red"), _sine(300), 4),
    "darkred": lambda p: _encode(p, _colour("0x990000"), _sine(330), 4),
    "blue": lambda p: _encode(p, _colour("blue"), _sine(3000), 4),
    "moving": lambda p: _encode(p, ["-f", "lavfi", "-i", f"testsrc2=s={SIZE}:r=30"],
                                "anoisesrc=a=0.3:r=44100:seed=7", 4),
    "three_colours": lambda p: _encode(p, ["-filter_complex", ";".join(
        [f"color=c={c}:s={SIZE}:r=30:d=2[c{i}]" for i, c in enumerate(("red", "green", "blue"))]
        + ["[c0][c1][c2]concat=n=3:v=1:a=0[v]"])], None, 6),
    "dissolve": lambda p: _encode(p, ["-filter_complex", f"color=c=red:s={SIZE}:r=30:d=3[a];color=c=blue:s={SIZE}"
                                                     ":r=30:d=3[b];[a][b]xfade=duration=0.6:offset=2.7[v]"], None, 5.4),
    "clicks120": lambda p: _encode(p, _colour("gray"), _clicks(120), 6),
    "clicks90": lambda p: _encode(p, _colour("gray"), _clicks(90), 6),
    "black_silent": lambda p: _encode(p, _colour("black"), "anullsrc=r=44100:cl=stereo", 3),
    "tiny": lambda p: _encode(p, _colour("green"), _sine(440), 0.04),  # one frame, < one analysis window of audio
    "selfie": lambda p: _faces_clip(p, [(0.5, 0.7, 0.6)]),
    "pair_far": lambda p: _faces_clip(p, [(0.28, 1.0, 0.25), (0.72, 1.0, 0.25)]),
    "astronaut": lambda p: _photo_clip(p, "astronaut"),  # Eileen Collins' NASA portrait
    "cat": lambda p: _photo_clip(p, "chelsea"),
    "coffee": lambda p: _photo_clip(p, "coffee"),
}
DURATIONS = {"three_colours": 6.0, "dissolve": 5.4, "clicks120": 6.0, "clicks90": 6.0, "black_silent": 3.0,
             "tiny": 0.04}
SILENT = ("three_colours", "dissolve", "selfie", "pair_far", "astronaut", "cat", "coffee")  # made without an audio track


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("content_features")


@pytest.fixture(scope="module")
def features(clip_dir):
    """name -> ContentFeatures, each clip generated and analysed once for the module."""
    cache: dict[str, ContentFeatures] = {}

    def get(name: str) -> ContentFeatures:
        if name not in cache:
            path = CLIPS[name](clip_dir / f"{name}.mp4")
            cache[name] = extract(path, duration_s=DURATIONS.get(name, 4.0), has_audio=name not in SILENT,
                                  workdir=clip_dir / "work")
        return cache[name]

    return get


def extract(path: Path, *, workdir: Path, duration_s: float = 4.0, has_audio: bool = True,
            timeout_s: float = 30) -> ContentFeatures:
    result = extract_content_features(path, workdir, duration_s=duration_s, has_audio=has_audio, timeout_s=timeout_s)
    assert list(workdir.iterdir()) == [], "raw frames/audio left behind"
    return result


def hue_degrees(values: dict[str, float]) -> float:
    return math.degrees(math.atan2(values["hue_sin"], values["hue_cos"])) % 360


def assert_sane(result: ContentFeatures) -> None:
    vector = result.vector()
    assert len(vector) == len(FEATURE_NAMES) and set(result.values) == set(FEATURE_NAMES)
    assert all(isinstance(v, float) and math.isfinite(v) for v in vector)
    assert result.elapsed_s > 0


# -------------------------------------------------------------------------------- the names

def test_names_are_fixed_unique_and_documented():
    assert 24 <= len(FEATURE_NAMES) <= 40 and len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert all(FEATURE_DOCS[name].strip() for name in FEATURE_NAMES)
    assert AUDIO_FEATURE_NAMES[0] == "has_audio" and set(AUDIO_FEATURE_NAMES) < set(FEATURE_NAMES)


def test_as_json_is_versioned_rounded_and_serialisable(features):
    result = features("moving")
    data = json.loads(json.dumps(result.as_json()))
    assert data["names_version"] == NAMES_VERSION and list(data["values"]) == list(FEATURE_NAMES)
    for name, value in data["values"].items():
        assert value == float(f"{result.values[name]:.5g}")
    assert data["elapsed_s"] == pytest.approx(result.elapsed_s, abs=1e-3)


# ------------------------------------------------------------------------------------ visuals

def test_solid_colours_have_their_hue_and_no_motion(features):
    red, blue = features("red").values, features("blue").values
    assert hue_degrees(red) == pytest.approx(0, abs=8) or hue_degrees(red) == pytest.approx(360, abs=8)
    assert hue_degrees(blue) == pytest.approx(240, abs=8)
    assert red["hue_red"] > 0.95 and blue["hue_blue"] > 0.95
    assert sum(red[n] for n in FEATURE_NAMES if n.startswith("hue_") and n not in ("hue_cos", "hue_sin")) \
        == pytest.approx(1.0)
    for values in (red, blue):
        assert values["saturation"] > 0.9 and values["colourfulness"] > 0.2
        assert values["motion"] < 0.005 and values["detail"] < 0.01 and values["cuts_per_min"] == 0
    assert red["brightness"] > blue["brightness"]  # luma weights red about three times blue


def test_moving_pattern_has_motion_detail_and_no_cuts(features):
    moving, still = features("moving").values, features("red").values
    assert moving["motion"] > 0.02 and moving["motion"] > 10 * still["motion"]
    assert moving["detail"] > 0.03 and moving["contrast"] > 0.1
    assert moving["cuts_per_min"] == 0  # constant motion is not a cut


def test_three_solid_colours_are_two_cuts(features):
    values = features("three_colours").values
    assert values["cuts_per_min"] == pytest.approx(2 / (6 / 60), abs=0.5)
    assert values["brightness_change"] > 0.05
    assert {n for n in ("hue_red", "hue_green", "hue_blue") if values[n] > 0.15} == {"hue_red", "hue_green", "hue_blue"}


def test_a_quick_dissolve_is_one_cut(features):
    values = features("dissolve").values  # a change spread over two samples 0.25 s apart, both above the floor
    assert values["cuts_per_min"] == pytest.approx(60 / 5.4, rel=0.1)


# -------------------------------------------------------------------------------------- audio

def test_faces_are_counted_and_sized(features):
    selfie, pair = features("selfie").values, features("pair_far").values
    assert selfie["face_frames"] >= 0.75 and pair["face_frames"] >= 0.75
    assert selfie["face_count"] == pytest.approx(1.0, abs=0.25)
    assert pair["face_count"] == pytest.approx(2.0, abs=0.5)
    # The cascade's boxes are ~1.25x the drawn oval's width (they take in the hair and chin margins).
    assert selfie["face_size"] == pytest.approx(1.25 * 0.6, abs=0.15)
    assert pair["face_size"] == pytest.approx(1.25 * 0.25, abs=0.1)
    assert selfie["face_size"] > 2 * pair["face_size"]


def test_a_face_in_a_real_photograph(features):
    values = features("astronaut").values
    assert values["face_frames"] == 1.0 and values["face_count"] == 1.0
    # Her face is ~70 px wide once the 512-px photograph is scaled to the clip's 360-px width.
    assert values["face_size"] == pytest.approx(0.21, abs=0.05)


@pytest.mark.parametrize("name", ["red", "moving", "three_colours", "black_silent", "cat", "coffee"])
def test_no_faces_where_there_are_none(features, name):
    values = features(name).values
    assert values["face_frames"] == values["face_size"] == values["face_count"] == 0.0


def test_low_and_high_tones(features):
    low, high = features("red").values, features("blue").values
    assert low["spectral_centroid"] < high["spectral_centroid"] - 0.3
    assert low["zero_crossing_rate"] < high["zero_crossing_rate"]
    bands = [f"band_{i}" for i in range(1, 7)]
    assert max(bands, key=low.get) == "band_3" and low["band_3"] > 0.9  # 300 Hz: 210-481 Hz
    assert max(bands, key=high.get) == "band_6" and high["band_6"] > 0.9  # 3 kHz: 2.5-5.5 kHz
    for values in (low, high):
        assert values["has_audio"] == 1 and 0.6 < values["audio_level"] < 1
        assert values["spectral_flatness"] < 0.05  # a pure tone
        assert values["tempo_bpm"] == 0 and values["onset_rate"] < 0.5  # a held tone has no beat


def test_noise_is_flat(features):
    assert features("moving").values["spectral_flatness"] > 0.3
    assert features("moving").values["tempo_bpm"] == 0


@pytest.mark.parametrize("bpm", [120, 90])
def test_click_track_tempo_in_the_right_octave(features, bpm):
    values = features(f"clicks{bpm}").values
    assert values["tempo_bpm"] == pytest.approx(bpm, rel=0.05)
    assert values["beat_strength"] > 0.5
    assert values["onset_rate"] == pytest.approx(bpm / 60, rel=0.25)


def test_no_audio_means_zero_audio_features(features):
    values = features("three_colours").values
    assert all(values[name] == 0.0 for name in AUDIO_FEATURE_NAMES)


# ---------------------------------------------------------------------------------- degenerate

@pytest.mark.parametrize("name", ["black_silent", "tiny"])
def test_degenerate_clips_give_finite_numbers(features, name):
    result = features(name)
    assert_sane(result)
    values = result.values
    assert values["has_audio"] == 1 and values["motion"] >= 0 and values["cuts_per_min"] == 0
    if name == "black_silent":
        assert values["brightness"] < 0.02 and values["colourfulness"] < 0.01
        assert all(values[n] == 0 for n in ("hue_red", "hue_green", "hue_blue", "audio_level", "tempo_bpm"))
    else:
        assert values["hue_green"] > 0.95 and values["motion"] == 0


def test_every_clip_is_sane(features):
    for name in CLIPS:
        assert_sane(features(name))


# -------------------------------------------------------------------------------- similarity

def test_similar_clips_are_nearer(features):
    names = ["red", "darkred", "blue", "moving", "three_colours", "clicks120", "black_silent"]
    matrix = np.array([features(n).vector() for n in names])
    spread = matrix.std(axis=0)
    z = (matrix - matrix.mean(axis=0)) / np.where(spread > 0, spread, 1.0)

    def distance(a: str, b: str) -> float:
        x, y = z[names.index(a)], z[names.index(b)]
        return 1 - float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))

    assert distance("red", "darkred") < distance("red", "moving")
    assert distance("red", "darkred") < distance("red", "blue")


# ----------------------------------------------------------------------------- failures

def test_wrong_has_audio_and_timeout_raise_clear_errors(features, clip_dir, tmp_path):
    features("three_colours")  # generated; it has no audio track
    source = clip_dir / "three_colours.mp4"
    with pytest.raises(ContentFeaturesError) as info:
        extract(source, workdir=tmp_path / "w1", has_audio=True, duration_s=6)
    assert isinstance(info.value.__cause__, FFmpegError)
    with pytest.raises(ContentFeaturesError) as info:
        extract(source, workdir=tmp_path / "w2", has_audio=False, duration_s=6, timeout_s=0)
    assert isinstance(info.value.__cause__, FFmpegTimeout)


def test_not_media_raises(tmp_path):
    junk = mediagen.random_bytes(tmp_path / "junk.mp4")
    with pytest.raises(ContentFeaturesError, match="could not decode"):
        extract(junk, workdir=tmp_path / "work")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ContentFeaturesError):
        extract(empty, workdir=tmp_path / "work", has_audio=False)
    assert list((tmp_path / "work").iterdir()) == []


def test_playlists_are_refused_without_connecting(tmp_path, listener):
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.ts"
    body = f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{url}\n#EXT-X-ENDLIST\n"
    for name in ("evil.m3u8", "evil.mp4"):
        (tmp_path / name).write_text(body)
        with pytest.raises(ContentFeaturesError):
            extract(tmp_path / name, workdir=tmp_path / "work")
        assert not connection_attempted(listener), f"{name} made ffmpeg connect"
    assert list((tmp_path / "work").iterdir()) == []
