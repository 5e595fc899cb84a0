"""A stream's audio encoder: libsndfile (soundfile) writing MP3, Ogg/Opus or live WAV into a sink that the
stream drains after every write, so bytes leave as they are encoded and nothing accumulates.

libsndfile seeks back to patch a header only when it closes a file (a WAV's sizes): by then those bytes
have left, and a live stream has no end to declare, so writes behind what was sent are dropped and the WAV
header says "unknown length" (0xFFFFFFFF, as internet radio sends it). Opus runs at 48 kHz: the codec's
rate is resampled by soxr's streaming resampler (librosa's own), so chunk edges leave no seam."""

from __future__ import annotations

import struct

import numpy as np
import soundfile as sf

FORMATS = {  # format → (libsndfile format, subtype, media type)
    "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
    "ogg": ("OGG", "OPUS", "audio/ogg"),
    "wav": ("WAV", "PCM_16", "audio/wav"),
}
OPUS_RATE = 48_000
LIVE = 0xFFFFFFFF  # a RIFF size that says "unknown": a player reads until the connection ends


class _Sink:
    """The file-like object libsndfile writes into: bytes since the last drain, positions kept absolute."""

    def __init__(self) -> None:
        self.pending, self.sent, self.position = bytearray(), 0, 0

    def write(self, data) -> int:
        data = bytes(data)
        offset = self.position - self.sent
        if offset >= 0:  # a header patch behind what was sent is dropped (a live stream has no length)
            self.pending[offset : offset + len(data)] = data
        self.position += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        end = self.sent + len(self.pending)
        self.position = {0: offset, 1: self.position + offset, 2: end + offset}[whence]
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:  # libsndfile probes; a write-only stream has nothing to read
        return b""

    def drain(self) -> bytes:
        data = bytes(self.pending)
        self.sent += len(data)
        self.pending.clear()
        return data


class AudioEncoder:
    def __init__(self, fmt: str, sample_rate: int, mp3_compression: float = 0.4) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
        major, subtype, self.media_type = FORMATS[fmt]
        self.fmt, self.sample_rate = fmt, sample_rate
        self._resampler = None
        rate = sample_rate
        if fmt == "ogg" and sample_rate != OPUS_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(sample_rate, OPUS_RATE, 1, dtype="float32")
            rate = OPUS_RATE
        options = {"compression_level": mp3_compression, "bitrate_mode": "CONSTANT"} if fmt == "mp3" else {}
        self._sink = _Sink()
        self._file = sf.SoundFile(
            self._sink, "w", samplerate=rate, channels=1, format=major, subtype=subtype, **options
        )
        self._first = True

    def encode(self, audio: np.ndarray) -> bytes:
        """Mono float audio at `sample_rate` → the bytes it encodes to now."""
        audio = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
        if self._resampler is not None:
            audio = self._resampler.resample_chunk(audio)
        self._file.write(audio)
        return self._drained()

    def close(self) -> bytes:
        """The encoder's last bytes (what it buffered); the stream ends."""
        if self._resampler is not None:
            self._file.write(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        self._file.close()
        return self._drained()

    def _drained(self) -> bytes:
        data = self._sink.drain()
        if self._first and self.fmt == "wav" and len(data) >= 44:  # the RIFF and data sizes: unknown
            self._first = False
            data = data[:4] + struct.pack("<I", LIVE) + data[8:40] + struct.pack("<I", LIVE) + data[44:]
        return data
