"""Content features: a small fixed-length vector describing how a video looks and sounds.

Why: content-based recommendation. Nearest neighbours in this space (after standardising each
feature over the catalogue) are videos that look and sound alike, which lets the feed place a new
upload before anyone has interacted with it and diversify a page beyond what co-watching shows.

What: one hardened ffmpeg run (``run_ffmpeg``: protocol/demuxer whitelists, deadline, output cap;
its arguments come from ``ffmpeg_features``) decodes the source once and writes small raw files
into a private folder under ``workdir``: RGB frames sampled at ``FRAME_RATE`` per second and
squashed to ``FRAME_SIZE`` square, greyscale frames about once a second for face detection, and
(with audio) mono 16-bit PCM at ``AUDIO_RATE``. numpy turns them into ``FEATURE_NAMES`` (meaning,
unit and range of each in ``FEATURE_DOCS``) and OpenCV's stock frontal-face cascade counts faces
(a classic Viola-Jones detector shipped inside the opencv wheel: no model download, 6-12 ms a frame
on one core); the raw files are deleted. Only the first ``ANALYSE_MAX_S`` seconds are analysed:
live replays can last hours and their opening minutes describe them well enough. Every value is a
finite float, whatever the input (one frame, black video, digital silence); a source ffmpeg
cannot decode raises ``ContentFeaturesError``.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipfeed.media.ffmpeg import FFmpegError, run_ffmpeg
from clipfeed.media.ffmpeg_features import Sampling, sampling_args

__all__ = ["FEATURE_NAMES", "AUDIO_FEATURE_NAMES", "FEATURE_DOCS", "NAMES_VERSION", "ContentFeatures",
           "ContentFeaturesError", "extract_content_features"]

# Bump whenever a name, its order or its computation changes: stored vectors of another version
# are not comparable with new ones and must be recomputed.
NAMES_VERSION = 2
FRAME_RATE = 4
FRAME_SIZE = 48  # divisible by _CUT_GRID
AUDIO_RATE = 11025
ANALYSE_MAX_S = 180.0
FACE_SHORT_SIDE = 240  # a selfie's face is ~100 px wide there, a face across the room ~30 px
_FACE_MAX_FRAMES = 30  # one a second up to 30 s, spread thinner over longer clips
_FACE_MIN = 1 / 8  # smallest face looked for, relative to the frame's shorter side
_FACE_MAX_COUNT = 4
_CUT_GRID = 8
_CUT_FLOOR = 0.12  # mean colour change of a cut between 8x8 block averages; solid red -> green is 0.5
_WIN, _HOP = 512, 128  # 46 ms frames every 11.6 ms: the onset envelope resolves tempo to ~1 %
_FLOOR_DB, _ACTIVE_DB = -80.0, -60.0
_BAND_EDGES_HZ = np.geomspace(40.0, AUDIO_RATE / 2, 7)  # 40, 92, 210, 481, 1101, 2522, 5512
_TEMPO_BPM = (60.0, 200.0)
_SMOOTH = np.exp(-0.5 * (np.arange(-4, 5) / 2.0) ** 2)  # Gaussian, sigma 2 hops (23 ms)
_MIN_BEAT = 0.3  # onset-envelope autocorrelation at the beat period needed to call it a beat
_MIN_ONSETS = 3

FEATURE_DOCS: dict[str, str] = {
    "hue_cos": "chroma-weighted mean hue, cosine part (the mean colour's red-cyan opponent axis); -1..1, 0 grey",
    "hue_sin": "chroma-weighted mean hue, sine part (green-blue opponent axis); -1..1; atan2(sin, cos) is the "
               "hue angle: red 0, yellow 60, green 120, blue 240 deg",
    "saturation": "mean HSV saturation of all sampled pixels; 0..1",
    "brightness": "mean Rec. 709 luma of the (gamma-encoded) RGB; 0..1",
    "contrast": "spatial standard deviation of luma, averaged over frames; 0..0.5",
    "hue_red": "share of chroma within 30 deg of red; hue_red..hue_magenta sum to 1 (all 0 when grey)",
    "hue_yellow": "share of chroma near 60 deg",
    "hue_green": "share of chroma near 120 deg",
    "hue_cyan": "share of chroma near 180 deg",
    "hue_blue": "share of chroma near 240 deg",
    "hue_magenta": "share of chroma near 300 deg",
    "colourfulness": "Hasler-Suesstrunk colourfulness on 0..1 RGB, averaged over frames; 0 grey, 0.13 "
                     "moderately, >0.3 extremely colourful, up to ~1.1",
    "detail": "mean luma gradient magnitude between neighbouring pixels of the 48x48 frames; 0..~0.5",
    "motion": "mean absolute luma change between consecutive frames sampled 0.25 s apart; 0..1",
    "motion_std": "standard deviation over time of that change; 0..0.5",
    "brightness_change": "standard deviation over time of each frame's mean luma; 0..0.5",
    "cuts_per_min": "scene cuts (abrupt changes well above the clip's usual change) per minute; 0..240",
    "face_frames": "share of the frames sampled for faces (one a second, at most 30 spread over the analysed "
                   "span) that show at least one frontal face at least 1/8 of the shorter side wide; 0..1",
    "face_size": "mean, over the frames showing a face, of the largest face's width relative to the frame's "
                 "shorter side; 0 no face, ~0.2 a person across the room, ~0.5 a selfie close-up, ..1",
    "face_count": f"mean number of faces in the frames showing any, each capped at {_FACE_MAX_COUNT}; 0 no face, "
                  "1 a solo talking head, 2+ a group",
    "has_audio": "1 when the clip has an audio track (even if silent), else 0 and every audio feature is 0",
    "audio_level": "RMS level, -80..0 dBFS mapped to 0..1 (0 silent or no audio; a full-scale sine is 0.96)",
    "audio_level_std": "standard deviation of that level over 46 ms frames; 0..0.5",
    "zero_crossing_rate": "sign changes per sample at 11025 Hz over non-silent frames; 0..1",
    "spectral_centroid": "mean spectral centroid of non-silent frames, log-mapped 40 Hz..5.5 kHz to 0..1 "
                         "(300 Hz = 0.41, 3 kHz = 0.88)",
    "spectral_flatness": "mean Wiener entropy of non-silent frames; 0 pure tone .. 1 white noise",
    "band_1": "share of spectral energy in 40-92 Hz; band_1..band_6 sum to 1 (all 0 when silent)",
    "band_2": "share in 92-210 Hz",
    "band_3": "share in 210-481 Hz",
    "band_4": "share in 481-1101 Hz",
    "band_5": "share in 1.1-2.5 kHz",
    "band_6": "share in 2.5-5.5 kHz",
    "onset_rate": "note/percussion onsets per second (peaks of spectral flux); 0..~20",
    "tempo_bpm": "beat tempo in BPM from the onset envelope's autocorrelation, 60..200 (a beat above ~170 "
                 "may come out at half tempo); 0 when no clear beat",
    "beat_strength": "that autocorrelation at the chosen beat period; 0 (no periodicity, or under 3 onsets) .. "
                     "1 (metronome)",
}
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURE_DOCS)
AUDIO_FEATURE_NAMES = FEATURE_NAMES[FEATURE_NAMES.index("has_audio"):]


class ContentFeaturesError(ValueError):
    """The source could not be decoded into frames (or audio samples) to describe."""


@dataclass
class ContentFeatures:
    values: dict[str, float]
    elapsed_s: float

    def vector(self) -> list[float]:
        return [self.values[name] for name in FEATURE_NAMES]

    def as_json(self) -> dict:
        return {"names_version": NAMES_VERSION,
                "values": {name: float(f"{self.values[name]:.5g}") for name in FEATURE_NAMES},
                "elapsed_s": round(self.elapsed_s, 3)}


def extract_content_features(src: Path, workdir: Path, *, duration_s: float, has_audio: bool, timeout_s: float,
                             ffmpeg: str | None = None, threads: int = 1) -> ContentFeatures:
    """Describe ``src`` (see the module docstring). ``duration_s`` (from the probe) bounds the
    analysed span and the bytes ffmpeg may write; ``threads``: decoder threads."""
    started = time.monotonic()
    span = duration_s if math.isfinite(duration_s) and duration_s > 0 else ANALYSE_MAX_S
    span = min(span + 1.0, ANALYSE_MAX_S)
    sampling = Sampling(frame_rate=FRAME_RATE, frame_size=FRAME_SIZE, face_rate=min(1.0, _FACE_MAX_FRAMES / span),
                        face_short_side=FACE_SHORT_SIDE, audio_rate=AUDIO_RATE)
    per_second = FRAME_RATE * FRAME_SIZE * FRAME_SIZE * 3 + (AUDIO_RATE * 2 if has_audio else 0)
    face_bytes = (_FACE_MAX_FRAMES + 2) * (4 * FACE_SHORT_SIDE ** 2 + 64)
    max_bytes = int((span + 2.0) * per_second * 1.25) + face_bytes + (1 << 20)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    # A folder of our own: the size cap counts only our files and cleanup cannot touch anyone else's.
    tmp = Path(tempfile.mkdtemp(prefix=".content-features-", dir=workdir))
    frames_path, audio_path, faces_dir = tmp / "frames.rgb", tmp / "audio.pcm", tmp / "faces"
    faces_dir.mkdir()
    args = sampling_args(src, sampling, span_s=span, threads=threads, frames_out=frames_path,
                         faces_pattern=faces_dir / "%04d.pgm", audio_out=audio_path if has_audio else None)
    try:
        try:
            run_ffmpeg(args, timeout_s=timeout_s, output_dir=tmp, max_output_bytes=max_bytes, ffmpeg=ffmpeg, cwd=tmp)
        except FFmpegError as exc:
            raise ContentFeaturesError(f"ffmpeg could not decode {Path(src).name} for content features: {exc}") from exc
        frames = _read_raw(frames_path, np.uint8, "video frames")
        usable = frames.size - frames.size % (FRAME_SIZE * FRAME_SIZE * 3)
        if not usable:
            raise ContentFeaturesError("the source decoded to less than one video frame")
        frames = frames[:usable].reshape(-1, FRAME_SIZE, FRAME_SIZE, 3)
        samples = _read_raw(audio_path, "<i2", "audio samples").astype(np.float32) / 32768 if has_audio else None
        faces = _faces(sorted(faces_dir.glob("*.pgm")), threads)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with np.errstate(all="ignore"):
        values = {**_visual(frames), **faces, **_audio(samples)}
    values = {name: float(np.nan_to_num(values[name], nan=0.0, posinf=0.0, neginf=0.0)) for name in FEATURE_NAMES}
    return ContentFeatures(values=values, elapsed_s=time.monotonic() - started)


def _read_raw(path: Path, dtype, what: str) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype=dtype)
    except OSError as exc:
        raise ContentFeaturesError(f"ffmpeg wrote no {what}") from exc
    if data.size == 0:
        raise ContentFeaturesError(f"the source decoded to no {what}")
    return data


# ------------------------------------------------------------------------------------ visuals

def _visual(frames: np.ndarray) -> dict[str, float]:
    # Per-frame statistics in blocks of frames: three minutes of frames as floats, times the
    # temporaries, would take hundreds of MB.
    parts = [_frame_stats(frames[i:i + 64]) for i in range(0, len(frames), 64)]
    col = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    luma, n = col["luma"], len(frames)
    hist = col["hist"].mean(axis=0)
    # Compression noise gives greys a little chroma: below this there is no colour to describe.
    hist = hist / hist.sum() if hist.sum() > 1e-4 else np.zeros(6)
    change = np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2))
    block_change = np.abs(np.diff(col["blocks"], axis=0)).mean(axis=(1, 2, 3))
    values = {
        "hue_cos": col["alpha"].mean(), "hue_sin": col["beta"].mean(), "saturation": col["saturation"].mean(),
        "brightness": luma.mean(), "contrast": col["contrast"].mean(), "colourfulness": col["colourfulness"].mean(),
        "detail": col["detail"].mean(), "motion": change.mean() if n > 1 else 0.0,
        "motion_std": change.std() if n > 1 else 0.0, "brightness_change": luma.mean(axis=(1, 2)).std(),
        "cuts_per_min": _count_cuts(block_change) / (max(n / FRAME_RATE, 1.0) / 60),
    }
    values.update(zip(("hue_red", "hue_yellow", "hue_green", "hue_cyan", "hue_blue", "hue_magenta"), hist))
    return values


def _frame_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    rgb = frames.astype(np.float32) / 255
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    n, k = len(frames), FRAME_SIZE // _CUT_GRID
    luma = 0.2126 * r + 0.7152 * g + 0.0722 * b
    # Opponent coordinates: their angle is the hue, their length the chroma, and their mean is
    # exactly the chroma-weighted circular mean of the hue.
    alpha, beta = r - (g + b) / 2, np.float32(math.sqrt(3) / 2) * (g - b)
    top = rgb.max(axis=-1)
    saturation = np.where(top > 0, (top - rgb.min(axis=-1)) / np.maximum(top, 1e-6), 0.0)
    sector = ((np.degrees(np.arctan2(beta, alpha)) + 390.0) // 60).astype(np.int64) % 6
    weight = np.clip(np.hypot(alpha, beta) - 0.04, 0, None)  # noise-level chroma must not vote
    sector += 6 * np.arange(n)[:, None, None]
    hist = np.bincount(sector.ravel(), weights=weight.ravel(), minlength=6 * n).reshape(n, 6) / (FRAME_SIZE ** 2)
    rg, yb = r - g, (r + g) / 2 - b
    return {
        "luma": luma, "alpha": alpha.mean(axis=(1, 2)), "beta": beta.mean(axis=(1, 2)),
        "saturation": saturation.mean(axis=(1, 2)), "contrast": luma.std(axis=(1, 2)), "hist": hist,
        "colourfulness": (np.hypot(rg.std(axis=(1, 2)), yb.std(axis=(1, 2)))
                          + 0.3 * np.hypot(rg.mean(axis=(1, 2)), yb.mean(axis=(1, 2)))),
        "detail": np.hypot(np.diff(luma, axis=2)[:, :-1, :], np.diff(luma, axis=1)[:, :, :-1]).mean(axis=(1, 2)),
        "blocks": rgb.reshape(n, _CUT_GRID, k, _CUT_GRID, k, 3).mean(axis=(2, 4)),
    }


def _count_cuts(change: np.ndarray) -> int:
    """Changes that stand out from the clip's own level of change (a fast-moving clip changes a lot
    between every pair of frames without any cut), counting a change spread over two samples once."""
    if change.size == 0:
        return 0
    median = float(np.median(change))
    spread = 1.4826 * float(np.median(np.abs(change - median)))
    threshold = max(_CUT_FLOOR, median + 6 * spread, 3 * median)
    padded = np.concatenate(([0.0], change, [0.0]))
    return int(((change > threshold) & (change >= padded[:-2]) & (change > padded[2:])).sum())


# -------------------------------------------------------------------------------------- faces

_detectors = threading.local()  # a cascade is not safe to share between threads; loading one takes ~15 ms


def _face_detector():
    import cv2

    detector = getattr(_detectors, "frontal", None)
    if detector is None:
        detector = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        if detector.empty():
            raise ContentFeaturesError("OpenCV's frontal face cascade could not be loaded")
        _detectors.frontal = detector
    return detector


def _faces(images: list[Path], threads: int) -> dict[str, float]:
    import cv2

    cv2.setNumThreads(max(1, threads))
    detector = _face_detector()
    counts, sizes = [], []
    for path in images:
        frame = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_GRAYSCALE)
        if frame is None or min(frame.shape) < 24:
            continue
        short = min(frame.shape)
        smallest = max(24, int(short * _FACE_MIN))
        # No histogram equalisation: the cascade normalises every window by its own contrast, so a dim
        # picture is found as it is, and equalising a flat background only invents edges.
        # Scales 20 % apart: half the work of the usual 10 % (12 vs 22 ms on a busy 240x427 frame),
        # and a face is still seen at one of them; sizes come out within ~10 %.
        found = detector.detectMultiScale(frame, scaleFactor=1.2, minNeighbors=5, minSize=(smallest, smallest))
        counts.append(len(found))
        if len(found):
            sizes.append(max(int(w) for _x, _y, w, _h in found) / short)
    with_face = [min(count, _FACE_MAX_COUNT) for count in counts if count]
    return {"face_frames": len(with_face) / len(counts) if counts else 0.0,
            "face_size": float(np.mean(sizes)) if sizes else 0.0,
            "face_count": float(np.mean(with_face)) if with_face else 0.0}


# -------------------------------------------------------------------------------------- audio

def _db(power: np.ndarray | float) -> np.ndarray:
    return np.clip(10 * np.log10(np.maximum(power, 1e-12)), _FLOOR_DB, 0.0)


def _level(db: np.ndarray | float) -> np.ndarray:
    return (np.asarray(db) - _FLOOR_DB) / -_FLOOR_DB


def _audio(samples: np.ndarray | None) -> dict[str, float]:
    values = dict.fromkeys(AUDIO_FEATURE_NAMES, 0.0)
    if samples is None:
        return values
    values["has_audio"] = 1.0
    if samples.size < _WIN:
        samples = np.concatenate([samples, np.zeros(_WIN - samples.size, np.float32)])
    window = np.hanning(_WIN).astype(np.float32)
    scale = (window.sum() / 2) ** 2  # a full-scale sine's peak bin has power 1 (0 dB)
    freqs = np.fft.rfftfreq(_WIN, 1 / AUDIO_RATE)
    band_of = np.digitize(freqs, _BAND_EDGES_HZ) - 1  # -1 below 40 Hz, 6 at Nyquist: both left out
    in_range = (band_of >= 0) & (band_of < 6)
    # Flux is measured on ~1/4-octave bands, not single bins: a bin's power fluctuates by several dB
    # from frame to frame in any noisy sound, which would bury the onsets.
    starts = np.unique(np.searchsorted(freqs, np.geomspace(_BAND_EDGES_HZ[0], _BAND_EDGES_HZ[-1], 25)))
    views = np.lib.stride_tricks.sliding_window_view(samples, _WIN)[::_HOP]
    frame_db, zcr, centroid, flatness, flux = [], [], [], [], []
    bands, previous = np.zeros(6), None
    for start in range(0, len(views), 2048):  # in blocks: a long clip's spectrogram never sits in memory
        seg = views[start:start + 2048]
        power = np.abs(np.fft.rfft(seg * window, axis=1)) ** 2 / scale
        spec_db = _db(np.add.reduceat(power[:, starts[0]:starts[-1]], starts[:-1] - starts[0], axis=1)
                      / np.diff(starts))
        level = _db(np.mean(seg.astype(np.float64) ** 2, axis=1))
        active = level > _ACTIVE_DB
        frame_db.append(level)
        zcr.append(np.mean(np.signbit(seg[:, 1:]) != np.signbit(seg[:, :-1]), axis=1)[active])
        p = power[active][:, in_range] + 1e-12
        centroid.append((p * freqs[in_range]).sum(axis=1) / p.sum(axis=1))
        flatness.append(np.exp(np.log(p).mean(axis=1)) / p.mean(axis=1))
        bands += np.bincount(band_of[in_range], weights=p.sum(axis=0), minlength=6)[:6]
        # Spectral flux in dB: how much louder the spectrum got, per band, since the previous frame.
        stacked = spec_db if previous is None else np.vstack([previous, spec_db])
        rise = np.clip(np.diff(stacked, axis=0), 0, None).mean(axis=1)
        flux.append(rise if previous is not None else np.concatenate([[0.0], rise]))
        previous = spec_db[-1:]
    frame_db, flux = np.concatenate(frame_db), np.concatenate(flux)
    zcr, centroid, flatness = np.concatenate(zcr), np.concatenate(centroid), np.concatenate(flatness)
    values["audio_level"] = float(_level(_db(np.mean(samples.astype(np.float64) ** 2))))
    values["audio_level_std"] = float(_level(frame_db).std())
    if centroid.size:
        values["zero_crossing_rate"] = zcr.mean()
        lo, hi = _BAND_EDGES_HZ[0], _BAND_EDGES_HZ[-1]
        values["spectral_centroid"] = np.clip(np.log(centroid.mean() / lo) / np.log(hi / lo), 0, 1)
        values["spectral_flatness"] = flatness.mean()
        values.update(zip(("band_1", "band_2", "band_3", "band_4", "band_5", "band_6"), bands / bands.sum()))
    rate = AUDIO_RATE / _HOP
    onsets = _onsets(flux)
    values["onset_rate"] = onsets / (samples.size / AUDIO_RATE)
    # Without onsets there is no beat, only the periodicity of noise (a held tone, a slow sweep).
    if onsets >= _MIN_ONSETS:
        values["tempo_bpm"], values["beat_strength"] = _tempo(flux, rate)
    return values


def _onsets(flux: np.ndarray) -> int:
    """Local maxima (within ~60 ms) of the flux that stand out from its typical level by at least
    3 dB across the spectrum: steady tones and noise have none, each drum hit has one."""
    if flux.size < 3:
        return 0
    median = float(np.median(flux))
    threshold = max(3.0, median + 6 * 1.4826 * float(np.median(np.abs(flux - median))))
    reach = 5
    padded = np.pad(flux, reach, constant_values=-1.0)
    neighbours = np.lib.stride_tricks.sliding_window_view(padded, 2 * reach + 1)
    peaks = (flux > threshold) & (flux >= neighbours.max(axis=1)) & (flux > padded[reach - 1:-reach - 1])
    return int(peaks.sum())


def _tempo(flux: np.ndarray, rate: float) -> tuple[float, float]:
    """BPM and strength from the autocorrelation of the onset envelope. A pulse train also
    correlates at twice its period (half the tempo); a log-normal preference around 120 BPM (one
    octave wide) plus the decay of the biased autocorrelation with lag pick the right octave."""
    shortest, longest = int(rate * 60 / _TEMPO_BPM[1]), int(math.ceil(rate * 60 / _TEMPO_BPM[0]))
    if flux.size < 2 * longest + 2:  # fewer than two periods of the slowest tempo
        return 0.0, 0.0
    width = int(rate)  # a one-second local mean: crescendos and fades are not beats
    envelope = np.clip(flux - np.convolve(flux, np.ones(width) / width, mode="same"), 0, None)
    # Widened onsets: a period that is not a whole number of hops puts consecutive onsets one hop
    # early or late, which must not weaken its peak against that of a longer period.
    envelope = np.convolve(envelope, _SMOOTH, mode="same")
    envelope -= envelope.mean()
    spectrum = np.fft.rfft(envelope, 2 * envelope.size)
    acf = np.fft.irfft(np.abs(spectrum) ** 2)[:envelope.size]
    if acf[0] <= 1e-9:
        return 0.0, 0.0
    acf = acf / acf[0]
    lags = np.arange(shortest, longest + 1)
    peak = (acf[lags] >= acf[lags - 1]) & (acf[lags] >= acf[lags + 1]) & (acf[lags] > 0)
    if not peak.any():
        return 0.0, 0.0
    bpm = rate * 60 / lags
    score = np.where(peak, acf[lags] * np.exp(-0.5 * np.log2(bpm / 120.0) ** 2), -np.inf)
    best = int(lags[np.argmax(score)])
    strength = float(np.clip(acf[best], 0, 1))
    if strength < _MIN_BEAT:
        return 0.0, strength
    y0, y1, y2 = acf[best - 1], acf[best], acf[best + 1]
    curve = y0 - 2 * y1 + y2
    shift = float(np.clip(0.5 * (y0 - y2) / curve, -0.5, 0.5)) if curve < 0 else 0.0
    return float(np.clip(rate * 60 / (best + shift), *_TEMPO_BPM)), strength
