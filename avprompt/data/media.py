"""Decoding one clip into T = 10 frames and a 10-second mono waveform (PyAV, no torch).

Frames: for each one-second segment t the decoded frame whose timestamp (relative to the first
frame) is nearest the segment centre t + 0.5 s; this handles any (odd or variable) frame rate.
Each frame goes through open_clip's eval transform up to the tensor step: resize the shortest
side to ``image_size`` (bicubic, PIL, long side ``int(size * long / short)`` as torchvision
computes it), then a centre crop (offsets rounded as torchvision does). Frames are kept uint8
``(10, H, W, 3)``; ``normalize_frames`` applies mean/std at load time.

Audio: every audio frame is resampled by ``av.AudioResampler`` to mono float at ``sample_rate``
and concatenated. The result is cropped to exactly 10 s (AAC decoders over-produce a few hundred
samples); a shorter waveform is repeat-padded as laion-clap's ``repeatpad`` does (tile it
``floor(10 s / length)`` times, then zero-pad the remainder).

Notes (returned with the arrays, the clip is kept; ``prepare`` records them per clip):
* no audio stream, or no decoded sample: the waveform is silence (zeros);
* shorter than 10 s: segments past the end reuse the nearest (last) frame; audio repeat-padded;
* longer than 10.5 s: cropped to the first 10 s (decoding stops once both streams are past it);
* audio resampled to ``sample_rate``; audio downmixed from several channels to mono;
* frames upscaled (shortest side below ``image_size``).
Failures raise ``MediaError`` with the reason: missing file, unreadable/corrupt container, no
video stream, no decodable frame.

Pre-extracted layout: ``media`` may be a ``frames/<id>`` folder of jpgs (frame for segment t =
``int((t + 0.5) * n / 10)`` of the n sorted files) with its ``wave/<id>.npy`` (32 kHz, any
shape, read flat) resampled the same way; a missing wave file means silence (noted).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from avprompt.data.layout import PRE_EXTRACTED_SAMPLE_RATE, frame_files, pre_extracted_wave
from avprompt.data.records import NUM_SEGMENTS

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class MediaError(Exception):
    """A clip that cannot be decoded; the message is the reason."""


def transform_image(img: Image.Image, image_size: int) -> np.ndarray:
    """PIL image -> uint8 ``(S, S, 3)``: shortest side to S (bicubic), centre crop S x S."""
    img = img.convert("RGB")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(image_size * long / short)
    new_w, new_h = (image_size, new_long) if w <= h else (new_long, image_size)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BICUBIC)
    top = int(round((new_h - image_size) / 2.0))
    left = int(round((new_w - image_size) / 2.0))
    img = img.crop((left, top, left + image_size, top + image_size))
    return np.asarray(img, dtype=np.uint8)


def normalize_frames(frames: np.ndarray, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD) -> np.ndarray:
    """uint8 ``(..., H, W, 3)`` -> float32 ``(..., 3, H, W)`` normalised as open_clip does."""
    x = np.asarray(frames, dtype=np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    """Crop to ``n`` samples, or repeat-pad (laion-clap ``repeatpad``); empty -> zeros."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if len(wave) == 0:
        return np.zeros(n, np.float32)
    if len(wave) >= n:
        return np.ascontiguousarray(wave[:n])
    wave = np.tile(wave, n // len(wave))
    return np.pad(wave, (0, n - len(wave)))


def _resampler(sample_rate: int):
    import av

    return av.AudioResampler(format="flt", layout="mono", rate=sample_rate)


def _resample_frames(frames, sample_rate: int) -> np.ndarray:
    res = _resampler(sample_rate)
    chunks = []
    for fr in list(frames) + [None]:  # None flushes the resampler
        for out in res.resample(fr):
            chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _segment_targets() -> list[float]:
    return [t + 0.5 for t in range(NUM_SEGMENTS)]


LONG_MARGIN = 0.5  # seconds past 10 s before a clip counts as long (AAC over-produces ~25 ms)


def _format_notes(src_rate: int | None, channels: int, size: tuple[int, int] | None,
                  image_size: int, sample_rate: int) -> list[str]:
    """Notes on the conversions applied (resampling, downmixing, upscaling)."""
    notes = []
    if src_rate and src_rate != sample_rate:
        notes.append(f"audio resampled {src_rate} Hz -> {sample_rate} Hz")
    if channels > 1:
        notes.append(f"audio downmixed {channels} channels -> mono")
    if size is not None and min(size) < image_size:
        notes.append(f"frames upscaled ({size[0]}x{size[1]}, shortest side to {image_size})")
    return notes


def decode_video(path: str | Path, image_size: int, sample_rate: int, threads: int = 0):
    """mp4 -> (frames uint8 (10, S, S, 3), wave float32 (10 * sr,), notes list[str]).

    ``threads``: the decoder's and the pixel converter's threads, 0 = FFmpeg's choice (one per
    core); callers that run a process per core pass 1. The output does not depend on it."""
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError("missing file")
    notes: list[str] = []
    targets = _segment_targets()
    best: list = [None] * NUM_SEGMENTS
    best_d = [math.inf] * NUM_SEGMENTS
    audio_frames = []
    audio_s, stopped_early, duration = 0.0, False, None
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise MediaError("no video stream")
            vs = c.streams.video[0]
            if threads == 1:
                vs.codec_context.thread_count = 1
            else:
                vs.thread_type = "AUTO"
            streams = [vs] + ([c.streams.audio[0]] if c.streams.audio else [])
            if len(streams) == 1:
                notes.append("no audio stream: silence")
            duration = c.duration / 1e6 if c.duration else None
            t0, n_video, last_t, size = None, 0, 0.0, None
            for packet in c.demux(*streams):
                for frame in packet.decode():
                    if isinstance(frame, av.AudioFrame):
                        audio_frames.append(frame)
                        audio_s += frame.samples / float(frame.sample_rate or sample_rate)
                        continue
                    ts = frame.time if frame.time is not None else n_video / float(
                        vs.average_rate or 25)
                    t0 = ts if t0 is None else t0
                    t, n_video = ts - t0, n_video + 1
                    last_t = max(last_t, t)
                    size = size or (frame.width, frame.height)
                    for k, target in enumerate(targets):
                        d = abs(t - target)
                        if d < best_d[k]:
                            best_d[k], best[k] = d, frame
                # a long clip (a full video in a manifest) is cropped: stop decoding once both
                # streams are past 10 s instead of decoding minutes that are thrown away
                if last_t > NUM_SEGMENTS + LONG_MARGIN and (
                        len(streams) == 1 or audio_s > NUM_SEGMENTS + LONG_MARGIN):
                    stopped_early = True
                    break
            if n_video == 0:
                raise MediaError("no decodable video frame")
            src_rate = audio_frames[0].sample_rate if audio_frames else None
            channels = len(audio_frames[0].layout.channels) if audio_frames else 1
            wave = _resample_frames(audio_frames, sample_rate)
            frames = np.stack([transform_image(Image.fromarray(
                f.reformat(format="rgb24", threads=threads).to_ndarray()), image_size) for f in best])
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:  # corrupt/truncated containers
        reason = getattr(e, "strerror", None) or str(e)  # strerror leaves out the file name
        raise MediaError(f"cannot decode ({type(e).__name__}: {reason})") from None
    n = NUM_SEGMENTS * sample_rate
    if last_t < NUM_SEGMENTS - 1:
        notes.append(f"short video (last frame at {last_t:.1f} s): last frame repeated")
    if stopped_early or last_t > NUM_SEGMENTS + LONG_MARGIN or \
            len(wave) > n + int(LONG_MARGIN * sample_rate):
        length = duration or max(last_t, audio_s)
        notes.append(f"long clip ({length:.1f} s): cropped to the first {NUM_SEGMENTS} s")
    if len(streams) > 1 and len(wave) == 0:
        notes.append("no audio sample decoded: silence")
    elif 0 < len(wave) < n - sample_rate // 100:  # more than 10 ms short
        notes.append(f"short audio ({len(wave) / sample_rate:.2f} s): repeat-padded")
    notes += _format_notes(src_rate, channels, size, image_size, sample_rate)
    return frames, fit_length(wave, n), notes


def decode_pre_extracted(frames_dir: str | Path, image_size: int, sample_rate: int):
    """``frames/<id>/*.jpg`` + ``wave/<id>.npy`` -> same outputs as ``decode_video``."""
    import av

    frames_dir = Path(frames_dir)
    files = frame_files(frames_dir)
    if not files:
        raise MediaError("no frame images in the pre-extracted frames folder")
    notes: list[str] = []
    n = len(files)
    try:
        images = [Image.open(files[min(n - 1, int((t + 0.5) * n / NUM_SEGMENTS))])
                  for t in range(NUM_SEGMENTS)]
        size = images[0].size
        frames = np.stack([transform_image(img, image_size) for img in images])
    except OSError as e:
        raise MediaError(f"cannot read frame image ({e})") from None
    wave_path = pre_extracted_wave(frames_dir)
    src_rate = None
    if wave_path.is_file():
        try:
            raw = np.load(wave_path).astype(np.float32).reshape(1, -1)
        except (OSError, ValueError) as e:
            raise MediaError(f"cannot read {wave_path.name} ({e})") from None
        if raw.shape[1] > (NUM_SEGMENTS + LONG_MARGIN) * PRE_EXTRACTED_SAMPLE_RATE:
            notes.append(f"long clip ({raw.shape[1] / PRE_EXTRACTED_SAMPLE_RATE:.1f} s of "
                         f"audio): cropped to the first {NUM_SEGMENTS} s")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(raw), format="flt",
                                           layout="mono")
        frame.sample_rate = src_rate = PRE_EXTRACTED_SAMPLE_RATE
        wave = _resample_frames([frame], sample_rate)
    else:
        notes.append(f"no {wave_path.name}: silence")
        wave = np.zeros(0, np.float32)
    if 0 < len(wave) < NUM_SEGMENTS * sample_rate - sample_rate // 100:
        notes.append(f"short audio ({len(wave) / sample_rate:.2f} s): repeat-padded")
    notes += _format_notes(src_rate, 1, size, image_size, sample_rate)
    return frames, fit_length(wave, NUM_SEGMENTS * sample_rate), notes


def decode_clip(media: str | Path, image_size: int = 224, sample_rate: int = 48000, threads: int = 0):
    """Decode an mp4 or a pre-extracted frames folder; raises ``MediaError`` with the reason.
    ``threads``: as in ``decode_video``."""
    if Path(media).is_dir():
        return decode_pre_extracted(media, image_size, sample_rate)
    return decode_video(media, image_size, sample_rate, threads)
