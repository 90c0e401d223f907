"""Probe and validate an uploaded file before any transcode touches it.

Two layers:

1. ``sniff`` looks at the first bytes ourselves and refuses what must never reach a demuxer:
   text (HLS/DASH playlists, ffconcat lists, SDP, XML, anything naming a URL), still images,
   audio-only formats and unknown data. This is also where the precise rejection reasons come from.
2. PyAV opens the file with a protocol whitelist of ``file`` only and a format whitelist of
   single-file containers (``ALLOWED_DEMUXERS``), with QuickTime data references disabled, so the
   demuxer can never follow a reference to another file or a network address. A few frames at the
   start and near the end are decoded to prove the file really decodes (a truncated upload fails
   here).

Nothing here touches the network or opens any path but the one it is given.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import av

# Demuxers (FFmpeg's names) allowed to open an upload: single-file containers that cannot refer to
# other files or URLs. mov's data references are disabled explicitly (enable_drefs=0).
ALLOWED_DEMUXERS: tuple[str, ...] = (
    "mov", "mp4", "m4a", "3gp", "3g2", "mj2",  # QuickTime / ISO BMFF
    "matroska", "webm",
    "avi",
    "mpegts",
    "flv",
    "ogg",
)
FORMAT_WHITELIST = ",".join(ALLOWED_DEMUXERS)
PROTOCOL_WHITELIST = "file"
SNIFF_BYTES = 8192

# Demuxer options that keep an upload self-contained (used here and by ffmpeg.py for its inputs).
SAFE_DEMUXER_OPTIONS: dict[str, str] = {
    "protocol_whitelist": PROTOCOL_WHITELIST,
    "format_whitelist": FORMAT_WHITELIST,
    "enable_drefs": "0",
}


class MediaRejected(Exception):
    """The upload is not acceptable. ``code`` is stable (API/DB); ``message`` is for humans."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ProbeResult:
    container: str
    duration_s: float
    width: int  # coded
    height: int
    rotation: int  # display-matrix rotation, degrees counter-clockwise: 0, 90, 180 or 270
    display_width: int  # after rotation
    display_height: int
    fps: float
    video_codec: str
    pix_fmt: str | None
    has_audio: bool
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None
    bitrate: int | None
    size_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Sniff:
    kind: str  # "video_container" | "audio" | "image" | "playlist" | "text" | "unknown"
    label: str  # human name of what was recognised


# ---------------------------------------------------------------------------------------- sniffing

_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"BM", "BMP image"),
    (b"II*\x00", "TIFF image"),
    (b"MM\x00*", "TIFF image"),
    (b"\xff\x0a", "JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL image"),
    (b"\x00\x00\x01\x00", "ICO image"),
    (b"8BPS", "Photoshop image"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000 image"),
    (b"\x76\x2f\x31\x01", "OpenEXR image"),
    (b"DDS ", "DDS image"),
    (b"qoif", "QOI image"),
)
_AUDIO_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"ID3", "MP3 audio"),
    (b"fLaC", "FLAC audio"),
    (b"#!AMR", "AMR audio"),
    (b"MThd", "MIDI file"),
    (b"FORM", "AIFF audio"),
    (b"wvpk", "WavPack audio"),
    (b"MAC ", "Monkey's Audio"),
    (b".snd", "AU audio"),
)
# ISO BMFF brands of still-image formats (HEIF/HEIC/AVIF).
_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis",
                 b"avci", b"jpeg", b"jpgs"}
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_BMFF_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp"}

# Text formats that describe *other* media: playlists, manifests, concat lists, session descriptions.
_REFERENCE_TEXT = (
    (re.compile(rb"^#EXTM3U"), "an HLS/M3U playlist"),
    (re.compile(rb"^#EXTINF"), "an M3U playlist"),
    (re.compile(rb"^ffconcat\s+version", re.I), "an ffconcat list"),
    (re.compile(rb"^file\s+['\"]?\S", re.I), "a concat list"),
    (re.compile(rb"^v=0\s*$", re.M), "an SDP session description"),
    (re.compile(rb"^\[playlist\]", re.I), "a PLS playlist"),
    (re.compile(rb"^\[reference\]", re.I), "an ASF reference file"),
    (re.compile(rb"^<\?xml", re.I), "an XML document (DASH/SMIL/playlist)"),
    (re.compile(rb"^<(mpd|smil|asx|playlist|xspf|rss|feed|svg)\b", re.I), "an XML manifest or playlist"),
    (re.compile(rb"^(rtsptext|rtmp|http|https|ftp|file|udp|tcp|rtp|srt|data|concat|subfile|crypto):", re.I),
     "a reference to another resource"),
)
_URL_IN_TEXT = re.compile(rb"(\b[a-z][a-z0-9+.-]{1,15}://|\bfile:|\bdata:[a-z]+/)", re.I)


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    if b"\x00" in head and not (head.startswith((b"\xff\xfe", b"\xfe\xff"))):
        return False
    try:
        text = _decode_text(head)
    except UnicodeDecodeError:
        return False
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\r\n\t\f")
    return printable >= 0.95 * max(1, len(text))


def _decode_text(head: bytes) -> str:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head.decode("utf-16", errors="strict") if len(head) % 2 == 0 else head[:-1].decode("utf-16")
    # A chunk may cut a multi-byte UTF-8 character at its end: ignore a trailing partial character.
    for cut in range(0, 4):
        try:
            return head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    raise UnicodeDecodeError("utf-8", head, 0, len(head), "not text")


def _is_mpegts(head: bytes) -> bool:
    for packet, offset in ((188, 0), (192, 4), (204, 0)):
        if len(head) >= offset + 2 * packet + 1 and all(
                head[offset + i * packet] == 0x47 for i in range(3)):
            return True
    return False


def sniff(head: bytes) -> Sniff:
    """Classify a file from its first bytes. Never runs a demuxer."""
    # ISO BMFF (mp4/mov/3gp/m4a/heic/avif...): [size][type] boxes.
    if len(head) >= 12 and head[4:8] in _BMFF_BOXES:
        if head[4:8] == b"ftyp":
            major = head[8:12]
            size = int.from_bytes(head[0:4], "big")
            brands = {major} | {head[i:i + 4] for i in range(16, min(size, len(head), 256) - 3, 4)}
            if major in _IMAGE_BRANDS or (brands & _IMAGE_BRANDS and not brands & {
                    b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"qt  ", b"avc1", b"3gp4",
                    b"3gp5", b"3gp6", b"3g2a", b"dash", b"cmfc", b"M4V "}):
                return Sniff("image", "HEIF/AVIF still image")
            if major in _AUDIO_BRANDS:
                return Sniff("audio", "MPEG-4 audio (m4a)")
        return Sniff("video_container", "MP4/QuickTime")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return Sniff("video_container", "Matroska/WebM")
    if head.startswith(b"RIFF") and len(head) >= 12:
        riff = head[8:12]
        if riff == b"AVI ":
            return Sniff("video_container", "AVI")
        if riff == b"WEBP":
            return Sniff("image", "WebP image")
        if riff == b"WAVE":
            return Sniff("audio", "WAV audio")
        return Sniff("unknown", "RIFF file")
    if head.startswith(b"FLV\x01"):
        return Sniff("video_container", "FLV")
    if head.startswith(b"OggS"):
        return Sniff("video_container", "Ogg")
    if _is_mpegts(head):
        return Sniff("video_container", "MPEG-TS")
    for magic, label in _IMAGE_MAGIC:
        if head.startswith(magic):
            return Sniff("image", label)
    for magic, label in _AUDIO_MAGIC:
        if head.startswith(magic):
            return Sniff("audio", label)
    # Raw MPEG audio / ADTS AAC frame sync.
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0 and not _looks_like_text(head):
        return Sniff("audio", "MPEG audio")
    if _looks_like_text(head) or head.lstrip().startswith(b"<"):
        try:
            text = _decode_text(head).encode("utf-8")
        except UnicodeDecodeError:
            text = head
        text = text.lstrip(b"\xef\xbb\xbf").lstrip()
        for pattern, label in _REFERENCE_TEXT:
            if pattern.search(text):
                return Sniff("playlist", label)
        if _URL_IN_TEXT.search(text):
            return Sniff("playlist", "a text file naming other resources")
        return Sniff("text", "a text file")
    return Sniff("unknown", "data of an unknown format")


# ---------------------------------------------------------------------------------------- probing

def _rate(stream) -> float:
    for value in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if value is not None and value > 0:
            return float(value)
    return 0.0


def _video_streams(container) -> list:
    out = []
    for stream in container.streams.video:
        disposition = getattr(stream, "disposition", 0)
        try:
            attached = bool(int(disposition) & int(av.stream.Disposition.attached_pic))
        except (AttributeError, TypeError, ValueError):
            attached = False
        if not attached:
            out.append(stream)
    return out


def _duration_s(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return 0.0


def _decode_some(container, stream, count: int) -> tuple[int, int | None]:
    """Decode up to ``count`` frames of ``stream``; returns (frames, rotation of the first frame)."""
    frames, rotation = 0, None
    for packet in container.demux(stream):
        for frame in packet.decode():
            if rotation is None:
                rotation = int(frame.rotation or 0)
            frames += 1
            if frames >= count:
                return frames, rotation
    return frames, rotation


def _open(path: Path):
    # "file:" + absolute path: a name containing ':' can never be read as another protocol.
    return av.open("file:" + str(path.resolve()), mode="r", options=dict(SAFE_DEMUXER_OPTIONS))


def probe_media(path: Path, *, max_bytes: int, min_duration_s: float, max_duration_s: float,
                max_dimension: int, max_fps: float) -> ProbeResult:
    path = Path(path)
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise MediaRejected("not_media", f"the upload could not be read ({exc.strerror})") from exc
    if size == 0:
        raise MediaRejected("empty_file", "the file is empty (0 bytes)")
    if size > max_bytes:
        raise MediaRejected("too_large", f"the file is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    kind = sniff(head)
    if kind.kind == "playlist":
        raise MediaRejected("playlist_or_reference",
                            f"this is {kind.label}, not a video: upload the video file itself")
    if kind.kind == "image":
        raise MediaRejected("image_not_video", f"this is a still image ({kind.label}), not a video")
    if kind.kind == "audio":
        raise MediaRejected("no_video_stream", f"this is an audio-only file ({kind.label}); a video track is required")
    if kind.kind == "text":
        raise MediaRejected("not_media", "this is a text file, not a video")
    if kind.kind != "video_container":
        raise MediaRejected("not_media", "this file is not a video in a supported format "
                                         "(MP4/MOV, WebM/Matroska, AVI, MPEG-TS, FLV or Ogg)")
    try:
        container = _open(path)
    except av.error.FFmpegError as exc:
        raise MediaRejected("corrupt", f"the {kind.label} file could not be read; it may be truncated or damaged "
                                       f"({_short(exc)})") from exc
    with container:
        fmt = container.format.name
        streams = _video_streams(container)
        if not streams:
            raise MediaRejected("no_video_stream", "the file has no video track (audio only?)")
        video = streams[0]
        ctx = video.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width <= 0 or height <= 0:
            raise MediaRejected("corrupt", "the video track has no picture size; the file may be damaged")
        if width > max_dimension or height > max_dimension:
            raise MediaRejected("dimensions_too_large",
                                f"the video is {width}x{height}; the largest side may be at most {max_dimension} px")
        fps = _rate(video)
        if fps > max_fps * 1.01:
            raise MediaRejected("fps_too_high", f"the video runs at {fps:.0f} fps; the limit is {max_fps:g} fps")
        duration = _duration_s(container, video)
        if duration > max_duration_s + 0.05:
            raise MediaRejected("too_long",
                                f"the video is {duration:.1f} s long; the limit is {max_duration_s:g} s")
        if duration < min_duration_s - 0.05:
            raise MediaRejected("too_short",
                                f"the video is {duration:.2f} s long; it must be at least {min_duration_s:g} s")
        audio = container.streams.audio[0] if container.streams.audio else None
        info = dict(
            container=fmt, duration_s=round(duration, 3), width=width, height=height,
            video_codec=ctx.name, pix_fmt=ctx.pix_fmt, has_audio=audio is not None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            sample_rate=int(audio.codec_context.sample_rate) if audio is not None else None,
            channels=int(audio.codec_context.channels) if audio is not None else None,
            bitrate=int(container.bit_rate) if container.bit_rate else None, size_bytes=size)
        sar = video.sample_aspect_ratio or ctx.sample_aspect_ratio
        rotation = _verify_decodes(container, video, duration, kind.label)
    rotation = int(90 * round((rotation % 360) / 90)) % 360
    shown_w = width
    if sar is not None and sar.numerator > 0 and sar.denominator > 0 and sar != 1:
        shown_w = max(2, 2 * round(width * sar / 2))  # anamorphic: square the pixels
    display_w, display_h = display_size(shown_w, height, rotation)
    if fps <= 0:
        fps = 30.0
    return ProbeResult(rotation=rotation, display_width=display_w, display_height=display_h,
                       fps=round(fps, 3), **info)


def _verify_decodes(container, video, duration: float, label: str) -> int:
    """Decode the first frames and a frame near the end; returns the display rotation."""
    try:
        video.thread_type = "AUTO"
        frames, rotation = _decode_some(container, video, 3)
    except (av.error.FFmpegError, ValueError) as exc:
        raise MediaRejected("corrupt", f"the video does not decode ({_short(exc)}); the file may be damaged") from exc
    if frames == 0:
        raise MediaRejected("corrupt", f"no picture could be decoded from this {label} file; "
                                       "it may be truncated or damaged")
    if duration > 1.0:
        # A truncated upload with its index up front demuxes fine at the start: the end proves it.
        target = duration - min(1.0, duration / 4)
        try:
            container.seek(int(target / float(video.time_base)), stream=video, backward=True, any_frame=False)
            video.codec_context.flush_buffers()
            tail, _ = _decode_some(container, video, 1)
        except (av.error.FFmpegError, ValueError, OverflowError) as exc:
            raise MediaRejected("corrupt", f"the end of the video does not decode ({_short(exc)}); "
                                           "the upload looks truncated") from exc
        if tail == 0:
            raise MediaRejected("corrupt", "the end of the video is missing; the upload looks truncated")
    return int(rotation or 0)


def _short(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def display_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    return (height, width) if rotation % 180 == 90 else (width, height)
