import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from mfsr.cfa import cell_channels
from mfsr.kernels.accumulate import accumulate_frame, accumulate_frame_cfa, normalize

NO_CELL = np.zeros((2, 2), np.int64)


def _bilinear(field, y, x):
    return map_coordinates(field.astype(np.float64), [y, x], order=1, mode="nearest")


def _positions(h, w, ho, wo, s, flow, rob, rbin):
    yo, xo = np.mgrid[0:ho, 0:wo].astype(np.float64)
    ry, rx = (yo + 0.5) / s - 0.5, (xo + 0.5) / s - 0.5
    r = _bilinear(rob, (ry + 0.5) / rbin - 0.5, (rx + 0.5) / rbin - 0.5)
    py = ry + _bilinear(flow[..., 0], ry, rx)
    px = rx + _bilinear(flow[..., 1], ry, rx)
    return r, py, px


def _cov_at(inv_cov, py, px, gbin):
    hg, wg = inv_cov.shape[:2]
    gy = np.clip(np.floor((py + 0.5) / gbin).astype(int), 0, hg - 1)
    gx = np.clip(np.floor((px + 0.5) / gbin).astype(int), 0, wg - 1)
    c = inv_cov[gy, gx].astype(np.float64)
    return c[..., 0], c[..., 1], c[..., 2]


def _np_accumulate(frame, flow, inv_cov, gbin, rob, rbin, s, ho, wo):
    h, w, nc = frame.shape
    r, py, px = _positions(h, w, ho, wo, s, flow, rob, rbin)
    a, b, c = _cov_at(inv_cov, py, px, gbin)
    cy, cx = np.floor(py + 0.5).astype(int), np.floor(px + 0.5).astype(int)
    num = np.zeros((ho, wo, nc))
    den = np.zeros((ho, wo, 1))
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            iy, ix = cy + oy, cx + ox
            ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w) & (r > 0)
            dy, dx = iy - py, ix - px
            wt = np.where(ok, r * np.exp(-0.5 * (a * dy * dy + 2 * b * dy * dx + c * dx * dx)), 0)
            v = frame[np.clip(iy, 0, h - 1), np.clip(ix, 0, w - 1)].astype(np.float64)
            num += wt[..., None] * v
            den[..., 0] += wt
    return num, den


def _np_accumulate_cfa(raw, cell, flow, inv_cov, gbin, rob, rbin, s, ho, wo):
    h, w = raw.shape
    r, py, px = _positions(h, w, ho, wo, s, flow, rob, rbin)
    a, b, c = _cov_at(inv_cov, py, px, gbin)
    fy, fx = np.floor(py).astype(int), np.floor(px).astype(int)
    num = np.zeros((ho, wo, 3))
    den = np.zeros((ho, wo, 3))
    for oy in (-1, 0, 1, 2):
        for ox in (-1, 0, 1, 2):
            iy, ix = fy + oy, fx + ox
            ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w) & (r > 0)
            dy, dx = iy - py, ix - px
            wt = np.where(ok, r * np.exp(-0.5 * (a * dy * dy + 2 * b * dy * dx + c * dx * dx)), 0)
            v = raw[np.clip(iy, 0, h - 1), np.clip(ix, 0, w - 1)].astype(np.float64)
            ch = cell[iy % 2, ix % 2]
            for k in range(3):
                m = wt * (ch == k)
                num[..., k] += m * v
                den[..., k] += m
    return num, den


def _random_inputs(rng, h, w, gbin):
    flow = rng.uniform(-1.5, 1.5, (h, w, 2)).astype(np.float32)
    hg, wg = h // gbin, w // gbin
    # Random SPD inverse covariances with radii 0.3 .. 1.2 input px.
    ang = rng.uniform(0, np.pi, (hg, wg))
    r1, r2 = rng.uniform(0.3, 1.2, (2, hg, wg))
    cy, sx = np.cos(ang), np.sin(ang)
    inv = np.stack(
        [cy * cy / r1**2 + sx * sx / r2**2, cy * sx * (1 / r1**2 - 1 / r2**2), sx * sx / r1**2 + cy * cy / r2**2],
        -1,
    ).astype(np.float32)
    rob = rng.uniform(-0.3, 1.0, (hg, wg)).clip(0, 1).astype(np.float32)
    return flow, inv, rob


@pytest.mark.parametrize("nc", [1, 3])
@pytest.mark.parametrize("scale", [1.0, 2.0, 1.5, 0.7])
def test_accumulate_matches_numpy_twin(nc, scale):
    rng = np.random.default_rng(int(scale * 10) + nc)
    h, w = 9, 11
    frame = rng.random((h, w, nc)).astype(np.float32)
    flow, inv, rob = _random_inputs(rng, h, w, 1)
    ho, wo = round(h * scale), round(w * scale)
    num = np.zeros((ho, wo, nc), np.float32)
    den = np.zeros((ho, wo, 1), np.float32)
    accumulate_frame(frame, flow, inv, 1, rob, 1, scale, num, den)
    n_ref, d_ref = _np_accumulate(frame, flow, inv, 1, rob, 1, scale, ho, wo)
    np.testing.assert_allclose(num, n_ref, rtol=3e-4, atol=1e-5)
    np.testing.assert_allclose(den, d_ref, rtol=3e-4, atol=1e-5)
    # Accumulation adds to what is there.
    accumulate_frame(frame, flow, inv, 1, rob, 1, scale, num, den)
    np.testing.assert_allclose(den, 2 * d_ref, rtol=3e-4, atol=1e-5)


@pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
@pytest.mark.parametrize("scale", [1.0, 2.0, 1.5])
def test_accumulate_cfa_matches_numpy_twin(pattern, scale):
    rng = np.random.default_rng(int(scale * 10))
    h, w = 10, 12
    raw = rng.random((h, w)).astype(np.float32)
    flow, inv, rob = _random_inputs(rng, h, w, 2)
    cell = cell_channels(pattern)
    ho, wo = round(h * scale), round(w * scale)
    num = np.zeros((ho, wo, 3), np.float32)
    den = np.zeros((ho, wo, 3), np.float32)
    accumulate_frame_cfa(raw, cell, flow, inv, 2, rob, 2, scale, num, den)
    n_ref, d_ref = _np_accumulate_cfa(raw, cell, flow, inv, 2, rob, 2, scale, ho, wo)
    np.testing.assert_allclose(num, n_ref, rtol=3e-4, atol=1e-5)
    np.testing.assert_allclose(den, d_ref, rtol=3e-4, atol=1e-5)



@pytest.mark.parametrize("cfa", [False, True])
@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_wide_frames_take_the_interior_path_and_match(cfa, scale):
    # Rows of more than two 256-pixel chunks with a small flow: middle chunks
    # of interior rows have every window inside the frame (the unchecked
    # sample path), border chunks do not; both must match the twin.
    rng = np.random.default_rng(11 + int(scale) + 2 * cfa)
    h, w = 12, 700
    flow, inv, rob = _random_inputs(rng, h, w, 2 if cfa else 1)
    flow *= 0.3
    ho, wo = round(h * scale), round(w * scale)
    if cfa:
        raw = rng.random((h, w)).astype(np.float32)
        cell = cell_channels("GRBG")
        num = np.zeros((ho, wo, 3), np.float32)
        den = np.zeros((ho, wo, 3), np.float32)
        accumulate_frame_cfa(raw, cell, flow, inv, 2, rob, 2, scale, num, den)
        n_ref, d_ref = _np_accumulate_cfa(raw, cell, flow, inv, 2, rob, 2, scale, ho, wo)
    else:
        frame = rng.random((h, w, 3)).astype(np.float32)
        num = np.zeros((ho, wo, 3), np.float32)
        den = np.zeros((ho, wo, 1), np.float32)
        accumulate_frame(frame, flow, inv, 1, rob, 1, scale, num, den)
        n_ref, d_ref = _np_accumulate(frame, flow, inv, 1, rob, 1, scale, ho, wo)
    np.testing.assert_allclose(num, n_ref, rtol=3e-4, atol=1e-5)
    np.testing.assert_allclose(den, d_ref, rtol=3e-4, atol=1e-5)


def _tiny_kernel(h, w, radius):
    inv = np.zeros((h, w, 3), np.float32)
    inv[..., 0] = inv[..., 2] = 1 / radius**2
    return inv


def test_identity_single_frame_zero_flow_scale_one():
    rng = np.random.default_rng(7)
    frame = rng.random((16, 20, 1)).astype(np.float32)
    num = np.zeros_like(frame)
    den = np.zeros((16, 20, 1), np.float32)
    accumulate_frame(
        frame, np.zeros((16, 20, 2), np.float32), _tiny_kernel(16, 20, 0.15), 1,
        np.ones((16, 20), np.float32), 1, 1.0, num, den,
    )
    img = np.empty_like(num)
    conf = normalize(num, den, frame, False, NO_CELL, 1.0, 1.0, 1e-3, img)
    np.testing.assert_allclose(img, frame, atol=1e-6)
    np.testing.assert_allclose(conf, 1.0, atol=1e-6)  # neighbours weigh exp(-22)


def test_known_shift_is_undone():
    # Frame k shows the reference content moved by (+1, -2) px; with that flow
    # the merge of frame k alone reproduces the reference away from borders.
    rng = np.random.default_rng(8)
    scene = rng.random((20, 24)).astype(np.float32)
    ref = scene[2:18, 4:20]
    # contiguous, as the fusion passes frames (a strided view would compile
    # the kernel a second time, for layout 'A')
    frame = np.ascontiguousarray(scene[1:17, 6:22])  # frame[i + 1, j - 2] = ref[i, j]
    flow = np.zeros((16, 16, 2), np.float32)
    flow[..., 0], flow[..., 1] = 1.0, -2.0
    num = np.zeros((16, 16, 1), np.float32)
    den = np.zeros((16, 16, 1), np.float32)
    accumulate_frame(frame[..., None], flow, _tiny_kernel(16, 16, 0.15), 1, np.ones((16, 16), np.float32),
                     1, 1.0, num, den)
    np.testing.assert_allclose(num[2:-2, 2:-2, 0] / den[2:-2, 2:-2, 0], ref[2:-2, 2:-2], atol=1e-6)


def test_cfa_channels_only_get_their_samples():
    # A mosaic of a constant colour: each output channel must be exactly that
    # channel's value, whatever the weights.
    rgb = np.array([0.2, 0.5, 0.9], np.float32)
    cell = cell_channels("BGGR")
    raw = rgb[np.tile(cell, (5, 6))].astype(np.float32)
    rng = np.random.default_rng(9)
    flow, inv, rob = _random_inputs(rng, 10, 12, 2)
    rob[:] = 1.0
    num = np.zeros((20, 24, 3), np.float32)
    den = np.zeros((20, 24, 3), np.float32)
    accumulate_frame_cfa(raw, cell, flow, inv, 2, rob, 2, 2.0, num, den)
    img = np.empty_like(num)
    conf = normalize(num, den, raw[..., None], True, cell, 2.0, 1.0, 1e-4, img)
    np.testing.assert_allclose(img, np.broadcast_to(rgb, img.shape), atol=1e-5)
    np.testing.assert_allclose(conf, den.sum(-1), rtol=1e-6)


def test_zero_robustness_adds_nothing():
    frame = np.ones((6, 6, 1), np.float32)
    num = np.zeros((12, 12, 1), np.float32)
    den = np.zeros((12, 12, 1), np.float32)
    accumulate_frame(frame, np.zeros((6, 6, 2), np.float32), _tiny_kernel(6, 6, 0.5), 1,
                     np.zeros((6, 6), np.float32), 1, 2.0, num, den)
    assert not num.any() and not den.any()


def _np_fallback(ref, is_cfa, cell, s, radius, yo, xo):
    h, w = ref.shape[:2]
    ry, rx = (yo + 0.5) / s - 0.5, (xo + 0.5) / s - 0.5
    if is_cfa:
        ly, lx, n = int(np.floor(ry)) - 1, int(np.floor(rx)) - 1, 4
    else:
        ly, lx, n = int(np.floor(ry + 0.5)) - 1, int(np.floor(rx + 0.5)) - 1, 3
    ly = min(max(ly, 0), h - n)
    lx = min(max(lx, 0), w - n)
    nc = 3 if is_cfa else ref.shape[2]
    fb, fw = np.zeros(nc), np.zeros(nc)
    for iy in range(ly, ly + n):
        for ix in range(lx, lx + n):
            wt = np.exp(-0.5 * ((iy - ry) ** 2 + (ix - rx) ** 2) / radius**2)
            if is_cfa:
                fb[cell[iy % 2, ix % 2]] += wt * ref[iy, ix, 0]
                fw[cell[iy % 2, ix % 2]] += wt
            else:
                fb += wt * ref[iy, ix]
                fw += wt
    return fb / fw


@pytest.mark.parametrize("is_cfa", [False, True])
def test_normalize_falls_back_smoothly_where_weight_is_low(is_cfa):
    rng = np.random.default_rng(10)
    h, w, s = 8, 10, 3.0
    ref = rng.random((h, w, 1 if is_cfa else 3)).astype(np.float32)
    cell = cell_channels("RGGB") if is_cfa else NO_CELL
    ho, wo = 24, 30
    num = rng.random((ho, wo, 3)).astype(np.float32)
    den = rng.choice([0.0, 0.01, 0.5], (ho, wo, 3 if is_cfa else 1)).astype(np.float32)
    num *= den if is_cfa else den  # consistent sums: value = num / den
    img = np.empty_like(num)
    conf = normalize(num, den, ref, is_cfa, cell, s, 1.0, 0.02, img)
    assert np.isfinite(img).all()
    np.testing.assert_allclose(conf, den.sum(-1), rtol=1e-6)
    for yo, xo in [(0, 0), (5, 7), (23, 29), (12, 0), (11, 17)]:
        fb = _np_fallback(ref, is_cfa, cell, s, 1.0, yo, xo)
        for c in range(3):
            d = den[yo, xo, c if is_cfa else 0]
            want = num[yo, xo, c] / d if d >= 0.02 else (num[yo, xo, c] + (0.02 - d) * fb[c]) / 0.02
            np.testing.assert_allclose(img[yo, xo, c], want, rtol=1e-4, atol=1e-6)


def _np_sharpen(image, taps, amount, alpha, beta, gate, overshoot):
    """NumPy twin of ``sharpen``: luminance unsharp mask, then the 3x3 range clamp."""
    from scipy.ndimage import correlate1d, maximum_filter, minimum_filter

    img = image.astype(np.float64)
    lum = img.mean(axis=2)
    blurred = correlate1d(correlate1d(lum, taps.astype(np.float64), axis=0, mode="nearest"),
                          taps.astype(np.float64), axis=1, mode="nearest")
    d = lum - blurred
    g = amount * d * d / (d * d + gate * np.maximum(alpha * lum + beta, 0) + 1e-20) * d
    out = img + g[..., None]
    if np.isfinite(overshoot):
        lo = minimum_filter(img, size=(3, 3, 1), mode="nearest")
        hi = maximum_filter(img, size=(3, 3, 1), mode="nearest")
        margin = overshoot * (hi - lo)
        floor = np.where(lo >= 0, np.maximum(lo - margin, (1 - min(overshoot, 1.0)) * lo), lo - margin)
        out = np.clip(out, floor, hi + margin)
    return out


@pytest.mark.parametrize("nc", [1, 3])
@pytest.mark.parametrize("overshoot", [0.0, 0.25, np.inf])
@pytest.mark.parametrize("rows", [23, 203])  # one row per block, and blocks of several rows
def test_sharpen_matches_numpy_twin(nc, overshoot, rows):
    from mfsr.kernels.accumulate import sharpen
    from mfsr.kernels.structure_tensor import gaussian_weights

    rng = np.random.default_rng(nc)
    img = rng.random((rows, 31, nc)).astype(np.float32) ** 2
    taps = gaussian_weights(1.6)
    out = img.copy()
    sharpen(out, taps, 0.6, 1e-3, 1e-5, 0.3, overshoot)
    np.testing.assert_allclose(out, _np_sharpen(img, taps, 0.6, 1e-3, 1e-5, 0.3, overshoot), atol=2e-6)


def test_sharpen_never_crushes_or_rings_past_the_neighbourhood():
    """A dark pixel beside a bright edge: an unclamped mask pushes it below 0."""
    from mfsr.kernels.accumulate import sharpen
    from mfsr.kernels.structure_tensor import gaussian_weights

    img = np.full((16, 16, 3), 0.002, np.float32)
    img[:, 8:] = 0.9
    taps = gaussian_weights(1.6)
    free = img.copy()
    sharpen(free, taps, 0.6, 0.0, 0.0, 0.3, np.inf)
    assert free.min() < 0 and free.max() > 0.9  # what the clamp is for
    held = img.copy()
    sharpen(held, taps, 0.6, 0.0, 0.0, 0.3, 0.0)
    assert held.min() >= 0.002 - 1e-7 and held.max() <= 0.9 + 1e-7
    # the edge is still steepened where the neighbourhood allows it
    assert held[:, 7].max() <= img[:, 7].max() and held[:, 8].min() >= img[:, 8].min() - 1e-7
