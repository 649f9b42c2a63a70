"""datasets/transforms.py against the Lua fixtures (fb.resnet.torch transforms.lua run by Lua) and
hand-computed cases for the random transforms with known draws."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import reference
from datasets import transforms as T
from fbresnet_port import t7

IMAGENET_MEANSTD = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
TOL = 1e-5


def _fixture(name: str) -> torch.Tensor:
    return t7.load(reference("transforms", name))


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    assert a.shape == b.shape
    assert (a.double() - b.double()).abs().max().item() <= tol


# ---------------------------------------------------------------------------------------------
# Lua fixtures

@pytest.mark.parametrize("prefix, shape", [("", (3, 256, 341)), ("portrait_", (3, 340, 256))])
def test_scale_and_center_crop_match_lua(prefix, shape):
    x = _fixture(prefix + "input.t7")
    s = T.Scale(256)(x)
    assert tuple(s.shape) == shape              # long side truncated: 341.33 -> 341, 340.99 -> 340
    _close(s, _fixture(prefix + "scale256.t7"))
    _close(T.CenterCrop(224)(s), _fixture(prefix + "scale256_centercrop224.t7"))


def test_color_normalize_and_ten_crop_match_lua():
    s = _fixture("scale256.t7")
    n = T.ColorNormalize(IMAGENET_MEANSTD)(s)
    _close(n, _fixture("scale256_colornormalize.t7"))
    ten = T.TenCrop(224)(n)
    _close(ten, _fixture("scale256_colornormalize_tencrop224.t7"))


def test_val_pipeline_matches_lua():
    x = _fixture("input.t7")
    val = T.Compose([T.Scale(256), T.ColorNormalize(IMAGENET_MEANSTD), T.TenCrop(224)])
    _close(val(x), _fixture("scale256_colornormalize_tencrop224.t7"))


# ---------------------------------------------------------------------------------------------
# Deterministic primitives, hand-computed

def test_bicubic_hand_computed_align_corners_and_extrapolation():
    # positions 0, .5, 1, ..., 3 of [0, 1, 0, 0]; Catmull-Rom with p0 = 2p1 - p2 at the left edge and
    # p3 = 2p2 - p1 at the right edge; no clamping (the -0.0625 stays negative)
    src = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]])
    out = T.scale(src, 7, 1)
    expected = torch.tensor([0.0, 0.625, 1.0, 0.5625, 0.0, -0.0625, 0.0])
    _close(out[0, 0], expected, 1e-7)


def test_bicubic_is_exact_on_linear_ramps_and_keeps_corners():
    ramp = torch.arange(5.0).view(1, 1, 5).expand(2, 3, 5).contiguous()
    up = T.scale(ramp, 9, 3)
    _close(up[0, 0], torch.arange(9.0) / 2, 1e-6)
    down = T.scale(torch.rand(3, 7, 11), 4, 3)
    assert down.shape == (3, 3, 4)


def test_scale_keeps_image_with_matching_short_side():
    x = torch.rand(3, 20, 30)
    assert T.Scale(20)(x) is x
    assert T.Scale(10)(x).shape == (3, 10, 15)
    assert T.Scale(7)(torch.rand(3, 9, 10)).shape == (3, 7, 7)     # 10/9*7 = 7.78 truncates to 7


def test_center_crop_uses_ceil_offset():
    x = torch.arange(25.0).view(1, 5, 5)
    out = T.CenterCrop(2)(x)                    # offset ceil(3/2) = 2 (torchvision: round -> 1 or 2)
    assert out.tolist() == [[[12.0, 13.0], [17.0, 18.0]]]


def test_ten_crop_order():
    x = torch.arange(12.0).view(1, 3, 4)       # rows [0..3], [4..7], [8..11]
    out = T.TenCrop(2)(x)
    assert out.shape == (10, 1, 2, 2)
    firsts = [c[0, 0, 0].item() for c in out]
    # centre (x1 = 1, y1 = ceil(.5) = 1), TL, TR, BL, BR; then the same on the mirrored image
    assert firsts[:5] == [5.0, 0.0, 2.0, 4.0, 6.0]
    assert firsts[5:] == [6.0, 3.0, 1.0, 7.0, 5.0]


def test_color_normalize_copies_and_uses_first_three_channels():
    x = torch.full((4, 2, 2), 1.0)
    out = T.ColorNormalize({"mean": [0.5, 0.25, 0.0], "std": [0.5, 0.25, 2.0]})(x)
    assert out[:, 0, 0].tolist() == [1.0, 3.0, 0.5, 1.0]
    assert x.eq(1.0).all()


def test_rotate_180_degrees_is_double_flip():
    x = torch.rand(2, 3, 3)
    _close(T.rotate_bilinear(x, math.pi), x.flip(-1).flip(-2), 1e-5)
    assert T.Rotation(0)(x) is x


# ---------------------------------------------------------------------------------------------
# Random transforms with known draws

def _gen(seed: int = 123) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_random_crop_with_padding_draws_x_then_y():
    x = torch.rand(3, 6, 5)
    out = T.RandomCrop(4, 2)(x, _gen())
    g = _gen()
    x1 = int(torch.randint(0, 5 + 4 - 4 + 1, (), generator=g))  # padded width 9, crop 4 -> [0, 5]
    y1 = int(torch.randint(0, 6 + 4 - 4 + 1, (), generator=g))  # padded height 10 -> [0, 6]
    padded = F.pad(x, (2, 2, 2, 2))
    assert torch.equal(out, padded[:, y1:y1 + 4, x1:x1 + 4])


def test_random_crop_without_room_returns_padded_input():
    x = torch.rand(3, 4, 4)
    out = T.RandomCrop(8, 2)(x)
    assert torch.equal(out, F.pad(x, (2, 2, 2, 2)))


def test_horizontal_flip_probability_edges():
    x = torch.rand(3, 2, 3)
    assert torch.equal(T.HorizontalFlip(1.0)(x), x.flip(-1))
    assert T.HorizontalFlip(0.0)(x) is x


def test_lighting_with_known_alpha():
    eigval = [0.2175, 0.0188, 0.0045]
    eigvec = [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
    light = T.Lighting(0.1, eigval, eigvec)
    x = torch.zeros(3, 1, 2)
    out = light.apply_alpha(x, torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64))
    r = -0.5675 * 1.0 * 0.2175 + 0.7192 * -0.5 * 0.0188 + 0.4009 * 2.0 * 0.0045
    g = -0.5808 * 1.0 * 0.2175 + -0.0045 * -0.5 * 0.0188 + -0.8140 * 2.0 * 0.0045
    b = -0.5836 * 1.0 * 0.2175 + -0.6948 * -0.5 * 0.0188 + 0.4203 * 2.0 * 0.0045
    _close(out[:, 0, 0], torch.tensor([r, g, b]), 1e-7)
    assert x.eq(0).all()                        # Lighting works on a copy
    # the random form: alpha = 3 normal draws times alphastd
    y = torch.rand(3, 2, 2)
    alpha = torch.randn(3, dtype=torch.float64, generator=_gen(5)) * 0.1
    assert torch.equal(light(y, _gen(5)), light.apply_alpha(y, alpha))
    assert T.Lighting(0, eigval, eigvec)(y) is y


def _alpha(seed: int, var: float) -> float:
    u = torch.rand((), dtype=torch.float64, generator=_gen(seed)).item()
    return 1.0 + (-var + 2 * var * u)


def test_brightness_contrast_saturation_blend_in_place():
    base = torch.tensor([[[0.2, 0.8]], [[0.4, 0.6]], [[1.0, 0.0]]])  # 3 x 1 x 2
    gray = [0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 1.0, 0.299 * 0.8 + 0.587 * 0.6 + 0.114 * 0.0]
    a = _alpha(7, 0.4)

    x = base.clone()
    out = T.Brightness(0.4)(x, _gen(7))
    assert out is x                             # in place, like Lua's blend
    _close(out, base * a, 1e-6)

    x = base.clone()
    out = T.Saturation(0.4)(x, _gen(7))
    exp = torch.stack([a * base[c, 0] + (1 - a) * torch.tensor(gray) for c in range(3)]).unsqueeze(1)
    _close(out, exp, 1e-6)

    x = base.clone()
    out = T.Contrast(0.4)(x, _gen(7))
    m = sum(gray) / 2
    _close(out, a * base + (1 - a) * m, 1e-6)


def test_random_order_and_color_jitter():
    x = torch.rand(3, 2, 2)
    perm = torch.randperm(3, generator=_gen(3)).tolist()
    fns = [lambda im, g: im + 1, lambda im, g: im * 2, lambda im, g: im - 3]
    exp = x.clone()
    for i in perm:
        exp = fns[i](exp, None)
    _close(T.RandomOrder(fns)(x, _gen(3)), exp, 1e-6)
    assert T.ColorJitter({})(x) is x
    assert [type(t).__name__ for t in T.ColorJitter(brightness=0.4, saturation=0.1)._order.transforms] == \
        ["Brightness", "Saturation"]


def test_random_sized_crop_known_draws():
    x = torch.rand(3, 30, 40)
    out = T.RandomSizedCrop(8)(x, _gen(11))
    g = _gen(11)
    for _ in range(10):
        area = (0.08 + 0.92 * torch.rand((), dtype=torch.float64, generator=g).item()) * 30 * 40
        ratio = 0.75 + (4 / 3 - 0.75) * torch.rand((), dtype=torch.float64, generator=g).item()
        w = math.floor(math.sqrt(area * ratio) + 0.5)
        h = math.floor(math.sqrt(area / ratio) + 0.5)
        if torch.rand((), dtype=torch.float64, generator=g).item() < 0.5:
            w, h = h, w
        if h <= 30 and w <= 40:
            y1 = int(torch.randint(0, 30 - h + 1, (), generator=g))
            x1 = int(torch.randint(0, 40 - w + 1, (), generator=g))
            break
    else:
        pytest.fail("seed chosen so that an attempt fits")
    assert torch.equal(out, T.scale(x[:, y1:y1 + h, x1:x1 + w], 8, 8))


def test_random_sized_crop_fallback_after_ten_attempts():
    x = torch.rand(3, 1, 100)                   # no crop of >= 8 px area fits in one row
    g = _gen(2)
    out = T.RandomSizedCrop(4)(x, g)
    _close(out, T.scale(x, 400, 4)[:, :, 198:202], 0)  # Scale(4) -> 400x4, CenterCrop ceil(396/2)
    g_ref = _gen(2)
    torch.rand(30, dtype=torch.float64, generator=g_ref)      # 10 attempts x 3 uniforms
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=g_ref))


def test_random_scale_rounds_half_up():
    x = torch.rand(3, 10, 15)
    g = _gen(4)
    target = int(torch.randint(4, 7, (), generator=g))
    out = T.RandomScale(4, 6)(x, _gen(4))
    assert out.shape == (3, target, math.floor(1.5 * target + 0.5))


# ---------------------------------------------------------------------------------------------
# Scale's other torch/image resamplers: 'bilinear' (scaleBilinear -> scaleLinear_rowcol) and
# 'simple' (scaleSimple). Reference values by hand, and an independent per-pixel loop written from
# generic/image.c's formulas (float32 scalars, the C accumulation order).

def _c_linear_1d(src: list[float], dst_len: int) -> list[float]:
    """scaleLinear_rowcol on one row, pixel by pixel in float32 as the C loop does."""
    import numpy as np
    f = np.float32
    src_len = len(src)
    s = [f(v) for v in src]
    if dst_len == src_len:
        return [float(v) for v in s]
    dst = [f(0)] * dst_len
    if dst_len > src_len:
        scale = f(src_len - 1) / f(dst_len - 1)
        for di in range(dst_len - 1):
            if src_len == 1:
                dst[di] = s[0]
                continue
            si_f = f(f(di) * scale)
            si_i = int(si_f)
            si_f = f(si_f - f(si_i))
            dst[di] = f(f(f(1) - si_f) * s[si_i] + f(si_f * s[si_i + 1]))
        dst[dst_len - 1] = s[src_len - 1]
    else:
        scale = f(src_len) / f(dst_len)
        si0_i, si0_f = 0, f(0)
        for di in range(dst_len):
            si1_f = f(f(di + 1) * scale)
            si1_i = int(si1_f)
            si1_f = f(si1_f - f(si1_i))
            acc = f(f(f(1) - si0_f) * s[si0_i])
            n = f(f(1) - si0_f)
            for si in range(si0_i + 1, si1_i):
                acc = f(acc + s[si])
                n = f(n + f(1))
            if si1_i < src_len:
                acc = f(acc + f(si1_f * s[si1_i]))
                n = f(n + si1_f)
            dst[di] = f(acc / n)
            si0_i, si0_f = si1_i, si1_f
    return [float(v) for v in dst]


def _c_bilinear(img: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """scaleBilinear: every row to ``width`` into a float32 temp, then every column to ``height``."""
    out = torch.empty(img.shape[0], height, width)
    for k in range(img.shape[0]):
        tmp = [_c_linear_1d(img[k, j].tolist(), width) for j in range(img.shape[1])]
        for i in range(width):
            out[k, :, i] = torch.tensor(_c_linear_1d([row[i] for row in tmp], height))
    return out


def _c_simple(img: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """scaleSimple: out[j][i] = src[(long)(j*scy)][(long)(i*scx)], indices capped at the last pixel."""
    import numpy as np
    f = np.float32
    scx = f(img.shape[2]) / f(width)
    scy = f(img.shape[1]) / f(height)
    out = torch.empty(img.shape[0], height, width)
    for j in range(height):
        for i in range(width):
            ii = min(int(f(f(i) * scx)), img.shape[2] - 1)
            jj = min(int(f(f(j) * scy)), img.shape[1] - 1)
            out[:, j, i] = img[:, jj, ii]
    return out


@pytest.mark.parametrize("src, dst_len, expected", [
    ([0.0, 1.0], 3, [0.0, 0.5, 1.0]),               # enlarge: align corners, positions 0, .5, 1
    ([0.0, 4.0, 8.0], 5, [0.0, 2.0, 4.0, 6.0, 8.0]),
    ([5.0], 3, [5.0, 5.0, 5.0]),                    # one source pixel: copied everywhere
    ([1.0, 2.0, 3.0, 4.0], 2, [1.5, 3.5]),          # shrink by 2: mean of each pair
    ([0.0, 3.0, 6.0], 2, [1.0, 5.0]),               # scale 1.5: (0 + .5*3)/1.5, (.5*3 + 6)/1.5
])
def test_bilinear_hand_computed(src, dst_len, expected):
    row = torch.tensor(src).view(1, 1, -1)
    _close(T.scale(row, dst_len, 1, "bilinear")[0, 0], torch.tensor(expected), 1e-7)
    col = torch.tensor(src).view(1, -1, 1)                  # the same along the height
    _close(T.scale(col, 1, dst_len, "bilinear")[0, :, 0], torch.tensor(expected), 1e-7)


@pytest.mark.parametrize("src, dst_len, expected", [
    ([10.0, 20.0, 30.0, 40.0, 50.0], 2, [10.0, 30.0]),                 # i * 2.5 truncated: 0, 2
    ([10.0, 20.0], 5, [10.0, 10.0, 10.0, 20.0, 20.0]),                 # i * 0.4: 0, 0, 0, 1, 1
    ([1.0, 2.0, 3.0], 7, [1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]),          # i * 3/7 (float32)
])
def test_simple_hand_computed(src, dst_len, expected):
    row = torch.tensor(src).view(1, 1, -1)
    assert T.scale(row, dst_len, 1, "simple")[0, 0].tolist() == expected
    col = torch.tensor(src).view(1, -1, 1)
    assert T.scale(col, 1, dst_len, "simple")[0, :, 0].tolist() == expected


@pytest.mark.parametrize("src_hw, dst_wh", [((7, 11), (4, 3)), ((5, 6), (13, 9)), ((9, 4), (7, 20)),
                                            ((1, 5), (3, 4)), ((6, 1), (2, 3)), ((17, 23), (5, 5))])
def test_bilinear_and_simple_match_c_loops(src_hw, dst_wh):
    x = torch.rand(3, *src_hw, generator=torch.Generator().manual_seed(sum(src_hw)))
    _close(T.scale(x, *dst_wh, "bilinear"), _c_bilinear(x, *dst_wh), 1e-6)
    assert torch.equal(T.scale(x, *dst_wh, "simple"), _c_simple(x, *dst_wh))
    _close(T.scale(x[0], *dst_wh, "bilinear"), _c_bilinear(x[:1], *dst_wh)[0], 1e-6)   # 2-D input


def test_scale_transform_interpolation_modes():
    x = torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(3))
    out = T.Scale(12, "bilinear")(x)                       # 40/30*12 = 16
    assert out.shape == (3, 12, 16)
    _close(out, _c_bilinear(x, 16, 12), 1e-6)
    assert torch.equal(T.Scale(12, "simple")(x), _c_simple(x, 16, 12))
    assert T.Scale(30, "bilinear")(x) is x
    with pytest.raises(ValueError, match="simple | bicubic | bilinear"):
        T.Scale(12, "lanczos")
