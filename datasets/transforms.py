"""Port of fb.resnet.torch ``datasets/transforms.lua`` (and the torch/image routines it calls).

Images are C x H x W float tensors; x is the column, y the row; crops are 0-based and end-exclusive.
Every transform is a callable ``t(input, generator=None)``. Random transforms draw from ``generator``
(a :class:`torch.Generator`) or, when it is ``None``, from torch's global RNG, so a fixed seed gives
fixed draws. The draw order per transform follows the Lua code (e.g. RandomCrop draws x1 then y1).
Bit-exact parity with Lua's RNG stream is out of scope (PARITY.md §6.6).

The default resampler is torch/image's bicubic ``image.scale`` (generic/image.c ``scaleCubic_rowcol``):
separable, width first, align-corners positions in float32, Catmull-Rom (a = -0.5), linear
extrapolation of missing neighbours, no antialiasing and no clamping. It is neither PIL's nor
PyTorch's bicubic. ``'bilinear'`` (``scaleLinear_rowcol``: align-corners linear when enlarging, a box
filter when shrinking) and ``'simple'`` (``scaleSimple``: nearest neighbour) are ported as well.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Compose", "ColorNormalize", "Scale", "CenterCrop", "RandomCrop", "TenCrop", "RandomScale",
    "RandomSizedCrop", "HorizontalFlip", "Rotation", "Lighting", "Saturation", "Brightness",
    "Contrast", "RandomOrder", "ColorJitter", "Transform",
    "scale", "INTERPOLATIONS", "crop", "hflip", "rotate_bilinear", "grayscale", "blend",
    "uniform", "random_int", "lua_round",
]

Generator = Optional[torch.Generator]


# ---------------------------------------------------------------------------------------------
# Random draws with torch's Lua-side meaning

def uniform(generator: Generator = None, a: float = 0.0, b: float = 1.0) -> float:
    """``torch.uniform(a, b)``: a + (b - a) * U[0, 1), drawn in double precision."""
    u = torch.rand((), dtype=torch.float64, generator=generator).item()
    return a + (b - a) * u


def random_int(generator: Generator, a: int, b: int) -> int:
    """``torch.random(a, b)``: an integer uniformly drawn from [a, b] (both inclusive)."""
    if b < a:
        raise ValueError(f"random_int: empty range [{a}, {b}]")
    return int(torch.randint(a, b + 1, (), generator=generator).item())


def lua_round(x: float) -> int:
    """``torch.round``: floor(x + 0.5) (halves round up, unlike Python's banker's rounding)."""
    return int(math.floor(x + 0.5))


# ---------------------------------------------------------------------------------------------
# torch/image primitives

def crop(img: Tensor, x1: int, y1: int, x2: int, y2: int) -> Tensor:
    """``image.crop(img, x1, y1, x2, y2)``: a new tensor with columns [x1, x2) and rows [y1, y2)."""
    h, w = img.shape[-2], img.shape[-1]
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise ValueError(f"crop ({x1}, {y1}, {x2}, {y2}) outside a {w}x{h} image")
    return img[..., y1:y2, x1:x2].clone()


def hflip(img: Tensor) -> Tensor:
    """``image.hflip``: a new, horizontally mirrored tensor."""
    return img.flip(-1)


@functools.lru_cache(maxsize=256)
def _cubic_table(src_len: int, dst_len: int) -> tuple[Tensor, Tensor]:
    """Gather indices (4 x dst_len) and weights (4 x dst_len, float32) of ``scaleCubic_rowcol``.

    Positions are computed in float32 as the C code does (``scale = (float)(L-1)/(D-1)``,
    ``s = di*scale``, integer part by truncation, fraction ``t = s - int``). Output di is
    ``w0 p0 + w1 p1 + w2 p2 + w3 p3`` with p_k = src[si - 1 + k] and the Catmull-Rom weights of
    ``p1 + 0.5 t (a1 + t (a2 + t a3))``; a missing p0 (si = 0) is ``2 p1 - p2`` and a missing p3
    (si + 2 >= L) is ``2 p2 - p1``, folded into the weights. The last output copies the last input.
    """
    denom = (dst_len - 1) if dst_len > 1 else 1
    scale_f = torch.tensor(src_len - 1, dtype=torch.float32) / torch.tensor(denom, dtype=torch.float32)
    pos = torch.arange(dst_len - 1, dtype=torch.float32) * scale_f
    si = torch.cat([pos.to(torch.int64), torch.tensor([src_len - 1])])      # (long)si_f; last = copy
    t = torch.cat([(pos - si[:-1].to(torch.float32)), torch.zeros(1)]).double()
    t2, t3 = t * t, t * t * t
    w0 = 0.5 * (-t + 2 * t2 - t3)
    w1 = 1 + 0.5 * (-5 * t2 + 3 * t3)
    w2 = 0.5 * (t + 4 * t2 - 3 * t3)
    w3 = 0.5 * (-t2 + t3)
    no_p0 = si <= 0
    w1, w2, w0 = torch.where(no_p0, w1 + 2 * w0, w1), torch.where(no_p0, w2 - w0, w2), w0.masked_fill(no_p0, 0)
    no_p3 = si + 2 >= src_len
    w2, w1, w3 = torch.where(no_p3, w2 + 2 * w3, w2), torch.where(no_p3, w1 - w3, w1), w3.masked_fill(no_p3, 0)
    idx = torch.stack([si - 1, si, si + 1, si + 2]).clamp(0, src_len - 1)
    return idx, torch.stack([w0, w1, w2, w3]).float()


def _weighted_gather(src: Tensor, idx: Tensor, w: Tensor) -> Tensor:
    """``sum_k src[idx[k]] * w[k]`` along dim 0, accumulated tap by tap in order k = 0, 1, ...

    ``idx`` and ``w`` are K x dst_len (``w`` float32, cast to ``src``'s dtype). Summing in tap order
    reproduces the C loops' float32 accumulation order.
    """
    dst_len = idx.shape[1]
    w = w.to(src.dtype).view(idx.shape[0], dst_len, *([1] * (src.dim() - 1)))
    out = src.index_select(0, idx[0]).mul_(w[0])
    for k in range(1, idx.shape[0]):
        out.addcmul_(src.index_select(0, idx[k]), w[k])
    return out


def _cubic_rows(src: Tensor, dst_len: int) -> Tensor:
    """Resample ``src`` along dim 0 to ``dst_len`` like torch/image ``scaleCubic_rowcol``.

    A gather + weighted sum over the tables of :func:`_cubic_table`; agrees with the C code to
    float32 rounding (a few 1e-7 on 0..1 data: C evaluates the polynomial form, this the weight form).
    """
    src_len = src.shape[0]
    if dst_len == src_len:
        return src.clone()
    if src_len == 1:
        # torch/image writes all but the last output (left uninitialised there); all get the source value
        return src.expand(dst_len, *src.shape[1:]).clone()
    idx, w = _cubic_table(src_len, dst_len)
    # tap 1 (p1) first, as before: the weight form is not the C polynomial anyway
    return _weighted_gather(src, idx[[1, 0, 2, 3]], w[[1, 0, 2, 3]])


@functools.lru_cache(maxsize=256)
def _linear_table(src_len: int, dst_len: int) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Taps of torch/image ``scaleLinear_rowcol`` (generic/image.c) as (idx, w, divisor or None).

    Enlarging (dst > src): align-corners linear interpolation, ``scale = (float)(L-1)/(D-1)``,
    ``s = di*scale`` in float32, output ``(1-t) src[si] + t src[si+1]``; the last output copies the last
    input. Shrinking (dst < src): a box filter over [di*scale, (di+1)*scale) with ``scale = (float)L/D``:
    the first source pixel weighted by 1 minus the previous fraction, whole pixels by 1, the last one by
    its fraction (if inside the image), divided by the float32 sum of those weights ``n``.
    """
    f32 = np.float32
    if dst_len > src_len:
        if src_len == 1:
            return torch.zeros(1, dst_len, dtype=torch.int64), torch.ones(1, dst_len), None
        scale_f = f32(src_len - 1) / f32(dst_len - 1)
        pos = np.arange(dst_len - 1, dtype=f32) * scale_f
        si = np.minimum(pos.astype(np.int64), src_len - 1)
        t = (pos - si.astype(f32)).astype(f32)
        idx = np.stack([np.append(si, src_len - 1), np.minimum(np.append(si, src_len - 1) + 1, src_len - 1)])
        w = np.stack([np.append(f32(1) - t, f32(1)), np.append(t, f32(0))]).astype(f32)
        return torch.from_numpy(idx), torch.from_numpy(w), None
    scale_f = f32(src_len) / f32(dst_len)
    rows: list[tuple[list[int], list[float]]] = []
    divisors = np.empty(dst_len, dtype=f32)
    si0_i, si0_f = 0, f32(0)
    for di in range(dst_len):
        si1_f = f32(di + 1) * scale_f
        si1_i = int(si1_f)
        si1_f = f32(si1_f - f32(si1_i))
        taps, weights = [si0_i], [f32(1) - si0_f]
        n = f32(1) - si0_f
        for si in range(si0_i + 1, si1_i):
            taps.append(si)
            weights.append(f32(1))
            n = f32(n + f32(1))
        if si1_i < src_len:
            taps.append(si1_i)
            weights.append(si1_f)
            n = f32(n + si1_f)
        rows.append((taps, weights))
        divisors[di] = n
        si0_i, si0_f = si1_i, si1_f
    k = max(len(taps) for taps, _ in rows)
    idx = np.zeros((k, dst_len), dtype=np.int64)
    w = np.zeros((k, dst_len), dtype=f32)      # padding taps: source 0 with weight 0
    for di, (taps, weights) in enumerate(rows):
        idx[:len(taps), di] = taps
        w[:len(weights), di] = weights
    return torch.from_numpy(idx), torch.from_numpy(w), torch.from_numpy(divisors)


def _linear_rows(src: Tensor, dst_len: int) -> Tensor:
    """Resample ``src`` along dim 0 to ``dst_len`` like torch/image ``scaleLinear_rowcol``."""
    if dst_len == src.shape[0]:
        return src.clone()
    idx, w, divisor = _linear_table(src.shape[0], dst_len)
    out = _weighted_gather(src, idx, w)
    if divisor is not None:
        out.div_(divisor.to(src.dtype).view(dst_len, *([1] * (src.dim() - 1))))
    return out


_ROW_RESAMPLERS: dict[str, Callable[[Tensor, int], Tensor]] = {"bicubic": _cubic_rows, "bilinear": _linear_rows}
INTERPOLATIONS = ("bilinear", "bicubic", "simple")


def _scale_simple(x: Tensor, width: int, height: int) -> Tensor:
    """torch/image ``scaleSimple``: nearest neighbour, source index ``(long)(i * (float)(L/D))`` (float32),
    capped at L-1."""
    def nearest(src_len: int, dst_len: int) -> Tensor:
        sc = np.float32(src_len) / np.float32(dst_len)
        pos = np.arange(dst_len, dtype=np.float32) * sc
        return torch.from_numpy(np.minimum(pos.astype(np.int64), src_len - 1))

    rows = nearest(x.shape[-2], height)
    cols = nearest(x.shape[-1], width)
    return x.index_select(-2, rows).index_select(-1, cols)


def scale(img: Tensor, width: int, height: int, mode: str = "bicubic") -> Tensor:
    """``image.scale(img, width, height, mode)``; ``mode`` is ``'bicubic'`` (this port's default, as
    transforms.lua's), ``'bilinear'`` or ``'simple'``. Separable modes resample rows (width) first."""
    if mode not in INTERPOLATIONS:
        raise ValueError(f"image.scale: mode must be one of: simple | bicubic | bilinear (got {mode!r})")
    if img.dim() not in (2, 3):
        raise ValueError(f"scale expects a C x H x W or H x W tensor, got shape {tuple(img.shape)}")
    width, height = max(int(width), 1), max(int(height), 1)
    src = img if img.is_floating_point() else img.float()
    x = src if src.dim() == 3 else src.unsqueeze(0)
    if mode == "simple":
        out = _scale_simple(x, width, height).contiguous()
    else:
        rows = _ROW_RESAMPLERS[mode]
        tmp = rows(x.permute(2, 0, 1).contiguous(), width)        # W' x C x H
        out = rows(tmp.permute(2, 0, 1).contiguous(), height)     # H' x W' x C
        out = out.permute(2, 0, 1).contiguous()
    return out if src.dim() == 3 else out[0]


def rotate_bilinear(img: Tensor, theta: float) -> Tensor:
    """``image.rotate(img, theta, 'bilinear')`` (generic/image.c ``rotateBilinear``).

    Rotation about the image centre; a sample whose 2x2 neighbourhood leaves the image is 0, except
    that a neighbour just outside the border is replaced by the border pixel when the weight favours it.
    """
    h, w = img.shape[-2], img.shape[-1]
    f32 = torch.float32
    theta_f = float(torch.tensor(theta, dtype=f32))        # C stores theta as float
    c, s = math.cos(theta_f), math.sin(theta_f)
    xc = torch.tensor((w - 1) / 2.0, dtype=f32)
    yc = torch.tensor((h - 1) / 2.0, dtype=f32)
    id_ = torch.arange(w, dtype=f32).view(1, w)
    jd = torch.arange(h, dtype=f32).view(h, 1)
    dx = (id_ - xc).double()
    dy = (jd - yc).double()
    ri = (c * dx - s * dy).to(f32)
    rj = (c * dy + s * dx).to(f32)
    fi = ri + xc
    fj = rj + yc
    ii0 = torch.floor(fi).to(torch.int64)
    jj0 = torch.floor(fj).to(torch.int64)
    ii1, jj1 = ii0 + 1, jj0 + 1
    wi = fi - ii0.to(f32)
    wj = fj - jj0.to(f32)
    zero = torch.zeros_like(fi, dtype=torch.bool)
    snap = (ii1 == w) & (wi < 0.5)
    zero |= ~snap & (ii1 >= w)
    ii1 = torch.where(snap, ii0, ii1)
    snap = (jj1 == h) & (wj < 0.5)
    zero |= ~snap & (jj1 >= h)
    jj1 = torch.where(snap, jj0, jj1)
    snap = (ii0 == -1) & (wi > 0.5)
    zero |= ~snap & (ii0 < 0)
    ii0 = torch.where(snap, ii1, ii0)
    snap = (jj0 == -1) & (wj > 0.5)
    zero |= ~snap & (jj0 < 0)
    jj0 = torch.where(snap, jj1, jj0)
    ii0, ii1 = ii0.clamp(0, w - 1), ii1.clamp(0, w - 1)
    jj0, jj1 = jj0.clamp(0, h - 1), jj1.clamp(0, h - 1)
    src = img.double()
    wi, wj = wi.double(), wj.double()
    val = ((1.0 - wi) * (1.0 - wj) * src[..., jj0, ii0] + wi * (1.0 - wj) * src[..., jj0, ii1]
           + (1.0 - wi) * wj * src[..., jj1, ii0] + wi * wj * src[..., jj1, ii1])
    val = val.masked_fill(zero, 0.0)
    return val.to(img.dtype)


def grayscale(img: Tensor) -> Tensor:
    """transforms.lua ``grayscale``: 0.299 R + 0.587 G + 0.114 B copied to all three channels."""
    g = torch.zeros_like(img[0])
    g.add_(img[0], alpha=0.299).add_(img[1], alpha=0.587).add_(img[2], alpha=0.114)
    return g.unsqueeze(0).expand_as(img[:3]).clone()


def blend(img1: Tensor, img2: Tensor, alpha: float) -> Tensor:
    """transforms.lua ``blend``: img1 := alpha * img1 + (1 - alpha) * img2, **in place** on img1."""
    return img1.mul_(alpha).add_(img2, alpha=1.0 - alpha)


# ---------------------------------------------------------------------------------------------
# Transforms

class Transform:
    """A transforms.lua closure: ``t(input, generator=None) -> output``."""

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Port of transforms.lua ``Compose``: apply the transforms in order."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        for t in self.transforms:
            input = t(input, generator)
        return input


class ColorNormalize(Transform):
    """Port of transforms.lua ``ColorNormalize``: a copy with channel i := (x - mean[i]) / std[i], i < 3."""

    def __init__(self, meanstd: Mapping[str, Sequence[float]]):
        self.mean = [float(m) for m in meanstd["mean"]]
        self.std = [float(s) for s in meanstd["std"]]

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        img = input.clone()
        view = (3,) + (1,) * (img.dim() - 1)
        mean = torch.tensor(self.mean, dtype=img.dtype).view(view)
        std = torch.tensor(self.std, dtype=img.dtype).view(view)
        img[:3] = (img[:3] - mean) / std
        return img


class Scale(Transform):
    """Port of transforms.lua ``Scale``: resize of the shorter side to ``size`` (``interpolation``:
    ``'bicubic'`` (default), ``'bilinear'`` or ``'simple'``, torch/image's resamplers).

    The other side is ``long/short * size`` truncated to an integer (400x300 -> 341x256); an image
    whose shorter side already equals ``size`` is returned unchanged (not copied).
    """

    def __init__(self, size: int, interpolation: str = "bicubic"):
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"Scale: interpolation must be one of: simple | bicubic | bilinear "
                             f"(got {interpolation!r})")
        self.size = size
        self.interpolation = interpolation

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        w, h = input.shape[-1], input.shape[-2]
        size = self.size
        if (w <= h and w == size) or (h <= w and h == size):
            return input
        if w < h:
            return scale(input, size, h / w * size, self.interpolation)
        return scale(input, w / h * size, size, self.interpolation)


def _center_offsets(w: int, h: int, size: int) -> tuple[int, int]:
    return math.ceil((w - size) / 2), math.ceil((h - size) / 2)


class CenterCrop(Transform):
    """Port of transforms.lua ``CenterCrop``: offsets ceil((W - s)/2), ceil((H - s)/2)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        x1, y1 = _center_offsets(input.shape[-1], input.shape[-2], self.size)
        return crop(input, x1, y1, x1 + self.size, y1 + self.size)


class RandomCrop(Transform):
    """Port of transforms.lua ``RandomCrop``: optional zero padding, then a crop at x1 ~ [0, W-s], y1 ~ [0, H-s].

    Draw order: x1, then y1. The padded image always has 3 channels, as in Lua.
    """

    def __init__(self, size: int, padding: int = 0):
        self.size = size
        self.padding = padding

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        p = self.padding
        if p > 0:
            h, w = input.shape[-2], input.shape[-1]
            temp = input.new_zeros(3, h + 2 * p, w + 2 * p)
            temp[:, p:p + h, p:p + w] = input
            input = temp
        w, h = input.shape[-1], input.shape[-2]
        if w == self.size and h == self.size:
            return input
        x1 = random_int(generator, 0, w - self.size)
        y1 = random_int(generator, 0, h - self.size)
        return crop(input, x1, y1, x1 + self.size, y1 + self.size)


class TenCrop(Transform):
    """Port of transforms.lua ``TenCrop``: centre and four corners of the image and of its mirror.

    Output is 10 x C x s x s in the order centre, top-left, top-right, bottom-left, bottom-right,
    first for the image, then for ``hflip(image)``.
    """

    def __init__(self, size: int):
        self.size = size

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        s = self.size
        w, h = input.shape[-1], input.shape[-2]
        cx, cy = _center_offsets(w, h, s)
        corners = [(cx, cy), (0, 0), (w - s, 0), (0, h - s), (w - s, h - s)]
        out = [crop(img, x, y, x + s, y + s) for img in (input, hflip(input)) for x, y in corners]
        return torch.stack(out, 0)


class RandomScale(Transform):
    """Port of transforms.lua ``RandomScale``: shorter side := random int in [min, max], bicubic."""

    def __init__(self, min_size: int, max_size: int):
        self.min_size = min_size
        self.max_size = max_size

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        w, h = input.shape[-1], input.shape[-2]
        target = random_int(generator, self.min_size, self.max_size)
        tw, th = target, target
        if w < h:
            th = lua_round(h / w * tw)
        else:
            tw = lua_round(w / h * th)
        return scale(input, tw, th)


class RandomSizedCrop(Transform):
    """Port of transforms.lua ``RandomSizedCrop`` (Inception-style crop, then bicubic to s x s).

    Per attempt (at most 10): area fraction U(0.08, 1), aspect ratio U(3/4, 4/3) (linear),
    w = round(sqrt(A r)), h = round(sqrt(A / r)), swap w and h if U < 0.5; if it fits, y1 then x1
    are drawn and the crop is scaled. After 10 misses: CenterCrop(s)(Scale(s)(input)).
    """

    def __init__(self, size: int):
        self.size = size
        self._fallback = Compose([Scale(size), CenterCrop(size)])

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        H, W = input.shape[-2], input.shape[-1]
        for _ in range(10):
            target_area = uniform(generator, 0.08, 1.0) * (H * W)
            ratio = uniform(generator, 3 / 4, 4 / 3)
            w = lua_round(math.sqrt(target_area * ratio))
            h = lua_round(math.sqrt(target_area / ratio))
            if uniform(generator) < 0.5:
                w, h = h, w
            if h <= H and w <= W:
                y1 = random_int(generator, 0, H - h)
                x1 = random_int(generator, 0, W - w)
                return scale(crop(input, x1, y1, x1 + w, y1 + h), self.size, self.size)
        return self._fallback(input, generator)


class HorizontalFlip(Transform):
    """Port of transforms.lua ``HorizontalFlip``: mirror when U[0, 1) < prob."""

    def __init__(self, prob: float):
        self.prob = prob

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        if uniform(generator) < self.prob:
            input = hflip(input)
        return input


class Rotation(Transform):
    """Port of transforms.lua ``Rotation``: bilinear rotation by (U - 0.5) * deg degrees."""

    def __init__(self, deg: float):
        self.deg = deg

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        if self.deg != 0:
            input = rotate_bilinear(input, (uniform(generator) - 0.5) * self.deg * math.pi / 180)
        return input


class Lighting(Transform):
    """Port of transforms.lua ``Lighting`` (AlexNet PCA noise), unclamped.

    alpha ~ N(0, alphastd)^3; rgb[i] = sum_j eigvec[i][j] * alpha[j] * eigval[j] (double, as the
    worker's default Lua tensor type); a copy of the input gets rgb[i] added to channel i.
    """

    def __init__(self, alphastd: float, eigval: Sequence[float] | Tensor, eigvec: Sequence[Sequence[float]] | Tensor):
        self.alphastd = alphastd
        self.eigval = torch.as_tensor(eigval, dtype=torch.float64)
        self.eigvec = torch.as_tensor(eigvec, dtype=torch.float64)

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        if self.alphastd == 0:
            return input
        alpha = torch.randn(3, dtype=torch.float64, generator=generator) * self.alphastd
        return self.apply_alpha(input, alpha)

    def apply_alpha(self, input: Tensor, alpha: Tensor) -> Tensor:
        """The deterministic part: add the PCA colour shift for the given ``alpha`` (3 values)."""
        rgb = (self.eigvec * alpha.view(1, 3) * self.eigval.view(1, 3)).sum(1)
        out = input.clone()
        view = (3,) + (1,) * (out.dim() - 1)
        out[:3] += rgb.to(out.dtype).view(view)
        return out


class Saturation(Transform):
    """Port of transforms.lua ``Saturation``: blend with the grayscale image, alpha = 1 + U(-var, var). In place."""

    def __init__(self, var: float):
        self.var = var

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        gs = grayscale(input)
        alpha = 1.0 + uniform(generator, -self.var, self.var)
        return blend(input, gs, alpha)


class Brightness(Transform):
    """Port of transforms.lua ``Brightness``: blend with black (input *= alpha), alpha = 1 + U(-var, var). In place."""

    def __init__(self, var: float):
        self.var = var

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        gs = torch.zeros_like(input)
        alpha = 1.0 + uniform(generator, -self.var, self.var)
        return blend(input, gs, alpha)


class Contrast(Transform):
    """Port of transforms.lua ``Contrast``: blend with the mean gray level, alpha = 1 + U(-var, var). In place."""

    def __init__(self, var: float):
        self.var = var

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        gs = grayscale(input)
        gs.fill_(gs[0].double().mean().item())     # TH accumulates float means in double
        alpha = 1.0 + uniform(generator, -self.var, self.var)
        return blend(input, gs, alpha)


class RandomOrder(Transform):
    """Port of transforms.lua ``RandomOrder``: apply all transforms in a random permutation, chained."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        order = torch.randperm(len(self.transforms), generator=generator).tolist()
        for i in order:
            input = self.transforms[i](input, generator)
        return input


class ColorJitter(Transform):
    """Port of transforms.lua ``ColorJitter{brightness, contrast, saturation}``.

    RandomOrder over [Brightness, Contrast, Saturation] (those with a non-zero strength); identity if none.
    """

    def __init__(self, opt: Mapping[str, float] | None = None, *, brightness: float = 0,
                 contrast: float = 0, saturation: float = 0):
        opt = dict(opt or {})
        self.brightness = opt.get("brightness", brightness) or 0
        self.contrast = opt.get("contrast", contrast) or 0
        self.saturation = opt.get("saturation", saturation) or 0
        ts: list[Transform] = []
        if self.brightness != 0:
            ts.append(Brightness(self.brightness))
        if self.contrast != 0:
            ts.append(Contrast(self.contrast))
        if self.saturation != 0:
            ts.append(Saturation(self.saturation))
        self._order = RandomOrder(ts) if ts else None

    def __call__(self, input: Tensor, generator: Generator = None) -> Tensor:
        if self._order is None:
            return input
        return self._order(input, generator)
