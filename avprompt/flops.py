"""FLOP counting for the benchmarks and tests: torch's ``FlopCounterMode`` plus the FFT.

``FlopCounterMode`` has no formula for FFTs, so the audio towers' spectrogram
(``AudioTower.spectrogram``, ``torch.stft``) would count as free. Here a real-input transform of
length n counts 2.5 n log2 n FLOPs (half of a complex FFT's 5 n log2 n), per transformed row.
"""
from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import FlopCounterMode


def _fft_r2c_flop(input_shape, dim, normalization, onesided, out_shape=None, **kwargs) -> int:
    n = math.prod(input_shape[d] for d in dim)
    rows = math.prod(input_shape) // max(1, n)
    return int(rows * 2.5 * n * math.log2(max(2, n)))


def flop_counter(**kwargs) -> FlopCounterMode:
    """``FlopCounterMode(display=False, ...)`` that also counts real FFTs (``torch.stft``)."""
    kwargs.setdefault("display", False)
    return FlopCounterMode(custom_mapping={torch.ops.aten._fft_r2c: _fft_r2c_flop}, **kwargs)
