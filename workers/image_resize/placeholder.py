"""BlurHash encoding (https://blurha.sh), written from the public algorithm.

A few dozen bytes that a client decodes into a blurred preview while the rendition
loads. Computed on a tiny thumbnail (about 32 px), so the pure-Python loops cost a few
milliseconds; the DCT is separable, so rows are summed once per x-component.
"""

from __future__ import annotations

import math

_BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"
_SRGB_TO_LINEAR = [((v / 255) / 12.92) if v / 255 <= 0.04045 else (((v / 255) + 0.055) / 1.055) ** 2.4
                   for v in range(256)]


def _base83(value: int, length: int) -> str:
    return "".join(_BASE83[(value // 83 ** (length - i - 1)) % 83] for i in range(length))


def _linear_to_srgb(value: float) -> int:
    v = min(1.0, max(0.0, value))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _sign_pow(value: float, exp: float) -> float:
    return math.copysign(abs(value) ** exp, value)


def components_for(width: int, height: int, most: int = 4) -> tuple[int, int]:
    """More components along the longer side (4x3 for a landscape photo)."""
    if width >= height:
        return most, max(1, min(most, round(most * height / width)))
    return max(1, min(most, round(most * width / height))), most


def blurhash(rgb: bytes, width: int, height: int, x_components: int = 4, y_components: int = 3) -> str:
    """The BlurHash of ``width`` x ``height`` packed 8-bit RGB pixels."""
    if not (1 <= x_components <= 9 and 1 <= y_components <= 9):
        raise ValueError("BlurHash needs 1..9 components on each axis")
    if len(rgb) != width * height * 3:
        raise ValueError("pixel buffer does not match width x height x 3")
    cos_x = [[math.cos(math.pi * i * x / width) for x in range(width)] for i in range(x_components)]
    cos_y = [[math.cos(math.pi * j * y / height) for y in range(height)] for j in range(y_components)]
    lin = [_SRGB_TO_LINEAR[b] for b in rgb]

    # row_sums[y][i] = sum over x of cos_x[i][x] * pixel(x, y), per channel
    row_sums: list[list[tuple[float, float, float]]] = []
    for y in range(height):
        base = y * width * 3
        row = lin[base:base + width * 3]
        reds, greens, blues = row[0::3], row[1::3], row[2::3]
        sums = []
        for i in range(x_components):
            cx = cos_x[i]
            sums.append((sum(c * v for c, v in zip(cx, reds, strict=True)),
                         sum(c * v for c, v in zip(cx, greens, strict=True)),
                         sum(c * v for c, v in zip(cx, blues, strict=True))))
        row_sums.append(sums)

    factors: list[tuple[float, float, float]] = []
    for j in range(y_components):
        cy = cos_y[j]
        for i in range(x_components):
            scale = (1 if i == 0 and j == 0 else 2) / (width * height)
            r = g = b = 0.0
            for y in range(height):
                sr, sg, sb = row_sums[y][i]
                r += cy[y] * sr
                g += cy[y] * sg
                b += cy[y] * sb
            factors.append((r * scale, g * scale, b * scale))

    dc, ac = factors[0], factors[1:]
    out = [_base83((x_components - 1) + (y_components - 1) * 9, 1)]
    if ac:
        actual_max = max(abs(v) for f in ac for v in f)
        quantised = max(0, min(82, math.floor(actual_max * 166 - 0.5)))
        max_value = (quantised + 1) / 166
        out.append(_base83(quantised, 1))
    else:
        max_value = 1.0
        out.append(_base83(0, 1))
    dc_value = (_linear_to_srgb(dc[0]) << 16) + (_linear_to_srgb(dc[1]) << 8) + _linear_to_srgb(dc[2])
    out.append(_base83(dc_value, 4))
    for f in ac:
        q = [max(0, min(18, math.floor(_sign_pow(v / max_value, 0.5) * 9 + 9.5))) for v in f]
        out.append(_base83(q[0] * 19 * 19 + q[1] * 19 + q[2], 2))
    return "".join(out)


def decode_dc(hash_: str) -> tuple[int, int, int]:
    """The average colour a BlurHash encodes (its DC term), for checks and fallbacks."""
    value = 0
    for ch in hash_[2:6]:
        value = value * 83 + _BASE83.index(ch)
    return (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF
