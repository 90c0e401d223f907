"""Reading back the audio clipfeed wrote (HLS rungs, sound files) with PyAV, and measuring it."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def rung_bytes(rung_dir: Path) -> bytes:
    """A rung's fMP4 init segment followed by its media segments in playlist order: one file."""
    playlist = (rung_dir / "playlist.m3u8").read_text().splitlines()
    segments = [line.strip() for line in playlist if line.strip() and not line.startswith("#")]
    return (rung_dir / "init.mp4").read_bytes() + b"".join((rung_dir / s).read_bytes() for s in segments)


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    """Mono float samples of the first audio stream, and the sample rate."""
    chunks, rate = [], 0
    with av.open(str(path)) as container:
        assert container.streams.audio, f"{path} has no audio stream"
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            rate = frame.sample_rate
            data = frame.to_ndarray().astype(np.float64)
            if data.ndim == 2 and frame.format.is_planar:
                data = data.mean(axis=0)
            elif data.ndim == 2:  # packed: interleaved channels in one row
                data = data.reshape(-1, len(frame.layout.channels)).mean(axis=1)
            chunks.append(data)
    return np.concatenate(chunks), rate


def band_energy(samples: np.ndarray, rate: int, hz: float, width: float = 30.0) -> float:
    """Share of the signal's spectral energy within ±width Hz of `hz` (0..1)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1.0 / rate)
    return float(spectrum[(freqs > hz - width) & (freqs < hz + width)].sum() / spectrum.sum())


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1.0 / rate)[int(np.argmax(spectrum[1:])) + 1])


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples ** 2)))
