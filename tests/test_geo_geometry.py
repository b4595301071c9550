"""Geometry of satellite passes: global models, tie points, local residual, symmetric shifts."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from scipy.ndimage import gaussian_filter, map_coordinates, spline_filter

from mfsr.geo import fuse_arrays, fuse_rasters
from mfsr.geo.coregister import estimate_shift
from mfsr.geo.masked_fusion import fuse_window
from mfsr.geo.pass_geometry import PassGeometry
from mfsr.geo.tie_points import measure_tie_points, residual_field
from mfsr.synth import dead_leaves

CRS = "EPSG:32633"
TRANSFORM = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0)


def _scene(size: int, seed: int = 0) -> np.ndarray:
    """Texture at twice the passes' resolution: dead leaves plus fine noise (registration needs detail)."""
    rng = np.random.default_rng(seed)
    img = dead_leaves(size, seed=seed, grey=True).astype(np.float64)
    return 0.8 * img + 0.2 * gaussian_filter(rng.random((size, size)), 1.0)


def _render(coef: np.ndarray, shape, disp) -> np.ndarray:
    """Pass whose pixel q shows the scene where reference position r = q - d(r) is (area of 2x2 scene px).

    ``disp(y, x)`` is the displacement reference -> pass; its inverse is
    found by fixed-point iteration (the field is smooth and small).
    """
    h, w = shape
    out = np.zeros(shape)
    for a in (0.25, 0.75):
        for b in (0.25, 0.75):
            qy, qx = np.mgrid[0:h, 0:w].astype(np.float64)
            qy += a - 0.5
            qx += b - 0.5
            ry, rx = qy.copy(), qx.copy()
            for _ in range(6):
                d = disp(ry, rx)
                ry, rx = qy - d[..., 0], qx - d[..., 1]
            out += map_coordinates(coef, [2 * ry + 0.5, 2 * rx + 0.5], order=3, prefilter=False, mode="reflect")
    return (out / 4).astype(np.float32)


def _rotation(theta_deg, shift, centre, local=0.0, phase=0.0):
    th = np.deg2rad(theta_deg)

    def disp(y, x):
        yc, xc = y - centre[0], x - centre[1]
        dy = np.cos(th) * yc - np.sin(th) * xc - yc + shift[0]
        dx = np.sin(th) * yc + np.cos(th) * xc - xc + shift[1]
        if local:
            dy = dy + local * np.sin(2 * np.pi * y / 160 + phase)
            dx = dx + local * np.cos(2 * np.pi * x / 200 + phase)
        return np.stack([dy, dx], axis=-1)

    return disp


@pytest.fixture(scope="module")
def rotated_passes():
    lr = 256
    coef = spline_filter(_scene(2 * lr + 16), 3)
    rng = np.random.default_rng(4)
    disps = [lambda y, x: np.zeros(np.shape(y) + (2,))]
    for k in range(3):
        disps.append(_rotation(rng.uniform(-0.3, 0.3), rng.uniform(-1, 1, 2), ((lr - 1) / 2, (lr - 1) / 2),
                               local=0.4, phase=k))
    frames = [_render(coef, (lr, lr), d) for d in disps]
    noise = np.random.default_rng(5)
    frames = [f + noise.normal(0, 0.003, f.shape).astype(np.float32) for f in frames]
    return np.stack(frames)[:, None], disps


def test_estimate_shift_fits_a_similarity_over_windows():
    lr = 256
    coef = spline_filter(_scene(2 * lr + 16, seed=1), 3)
    truth = _rotation(0.25, (0.3, -0.6), ((lr - 1) / 2, (lr - 1) / 2))
    ref, mov = _render(coef, (lr, lr), lambda y, x: np.zeros(np.shape(y) + (2,))), _render(coef, (lr, lr), truth)
    m, size = 6, 96
    pos = [(y, x) for y in (8, lr - size - 8) for x in (8, lr - size - 8)]
    pad = np.pad(mov, m, mode="edge")
    refs = [ref[y : y + size, x : x + size] for y, x in pos]
    movs = [pad[y : y + size + 2 * m, x : x + size + 2 * m] for y, x in pos]
    ones = [np.ones(a.shape, bool) for a in refs], [np.ones(a.shape, bool) for a in movs]
    with pytest.raises(ValueError, match="positions"):
        estimate_shift(refs, ones[0], movs, ones[1], m, model="affine")
    with pytest.raises(ValueError, match="model"):
        estimate_shift(refs, ones[0], movs, ones[1], m, model="homography", positions=pos)
    corners = np.array([[0.0, 0.0], [0.0, lr - 1], [lr - 1, 0.0], [lr - 1, lr - 1]])
    expected = truth(corners[:, 0], corners[:, 1])
    errors = {}
    for model in ("translation", "similarity", "affine"):
        est = estimate_shift(refs, ones[0], movs, ones[1], m, model=model, positions=pos)
        got = PassGeometry(est.matrix).displacement_at(corners[:, 0], corners[:, 1])
        errors[model] = np.abs(got - expected).max()
        assert est.model_std < 0.05
    # 0.25 deg moves the corners by 0.8 px: a translation cannot follow
    assert errors["translation"] > 0.4
    assert errors["similarity"] < 0.05 and errors["affine"] < 0.05


def test_pass_geometry_transform_and_residual_interpolation():
    m = np.array([[1e-3, -2e-3, 0.4], [3e-3, 5e-4, -0.7]])
    rows, cols = np.array([10.0, 50.0, 90.0]), np.array([20.0, 60.0])
    res = np.arange(12, dtype=np.float32).reshape(3, 2, 2) / 10
    g = PassGeometry(m, rows, cols, res)
    assert not g.is_translation and PassGeometry.translation(0.1, 0.2).is_translation
    # the 3x3 transform moves (x, y) as the global part of the displacement
    y, x = 33.0, 71.0
    xt, yt, _ = g.transform() @ np.array([x, y, 1.0])
    glob = PassGeometry(m).displacement_at(y, x)
    np.testing.assert_allclose([yt - y, xt - x], glob, atol=1e-12)
    # at the nodes the residual is exact, beyond the outer nodes constant, between them linear
    at_nodes = g.displacement_at(rows[:, None], cols[None, :]) - PassGeometry(m).displacement_at(rows[:, None],
                                                                                                cols[None, :])
    np.testing.assert_allclose(at_nodes, res, atol=1e-6)
    beyond = g.displacement_at(0.0, 0.0) - PassGeometry(m).displacement_at(0.0, 0.0)
    np.testing.assert_allclose(beyond, res[0, 0], atol=1e-6)
    mid = g.displacement_at(30.0, 40.0) - PassGeometry(m).displacement_at(30.0, 40.0)
    np.testing.assert_allclose(mid, res[:2, :2].reshape(4, 2).mean(axis=0), atol=1e-6)
    field = g.window_field(5, 9, 7, 12)
    assert field.shape == (4, 5, 2) and field.dtype == np.float32
    np.testing.assert_allclose(field[2, 3], g.displacement_at(7.0, 10.0), atol=1e-5)


def test_fuse_window_with_constant_fields_matches_the_translation():
    rng = np.random.default_rng(0)
    hr, wr, s = 40, 44, 2.0
    base = gaussian_filter(rng.random((hr + 8, wr + 8)), 1.2).astype(np.float32)
    frames = [base[None, :, :, None][0, 1 : hr + 3, 2 : wr + 4].copy() for _ in range(3)]
    frames = [f + rng.normal(0, 0.01, f.shape).astype(np.float32) for f in frames]
    valids = [np.ones(f.shape[:2], bool) for f in frames]
    valids[1][5:9, 10:20] = False
    offsets = np.array([[0.0, 0.0], [0.3, 0.6], [0.8, 0.1]])
    args = ((hr, wr), (int(hr * s), int(wr * s)), s, (1e-3, 1e-4))
    kw = dict(reference=0, return_bounds=True, reject_floor=False)
    plain = fuse_window([f.copy() for f in frames], valids, offsets, *args, **kw)
    # the same translation split between the offset and a constant field
    fields = [None, np.full((hr, wr, 2), 0.25, np.float32), np.full((hr, wr, 2), -0.5, np.float32)]
    split = offsets - np.array([[0, 0], [0.25, 0.25], [-0.5, -0.5]])
    fielded = fuse_window([f.copy() for f in frames], valids, split, *args, fields=fields, **kw)
    for a, b in zip(plain, fielded):
        if a.dtype == bool:
            assert (a == b).mean() > 0.99
        else:
            fin = np.isfinite(a) & np.isfinite(b)
            np.testing.assert_allclose(a[fin], b[fin], atol=2e-4)


def test_tie_points_recover_a_smooth_residual(rotated_passes):
    frames, disps = rotated_passes
    ref, mov = frames[0, 0], frames[1, 0]

    def reader(a):
        def read(rows, cols):
            out = np.zeros((rows[1] - rows[0], cols[1] - cols[0]), np.float32)
            ok = np.zeros(out.shape, bool)
            y0, y1 = max(rows[0], 0), min(rows[1], a.shape[0])
            x0, x1 = max(cols[0], 0), min(cols[1], a.shape[1])
            out[y0 - rows[0] : y1 - rows[0], x0 - cols[0] : x1 - cols[0]] = a[y0:y1, x0:x1]
            ok[y0 - rows[0] : y1 - rows[0], x0 - cols[0] : x1 - cols[0]] = True
            return out, ok
        return read

    # the global part alone (true rotation and shift, no local term)
    yy, xx = np.mgrid[0:256:8, 0:256:8].astype(np.float64)
    truth = disps[1](yy, xx)
    a = np.c_[yy.ravel(), xx.ravel(), np.ones(yy.size)]
    lin = np.linalg.lstsq(a, truth.reshape(-1, 2), rcond=None)[0].T
    model = PassGeometry(lin)
    points = measure_tie_points(reader(ref), reader(mov), model, 256, 256)
    assert points.reliable.mean() > 0.8
    residual, used = residual_field(points, model)
    assert residual is not None and used.sum() >= points.reliable.sum() * 0.8
    full = PassGeometry(lin, points.rows, points.cols, residual)
    err_global = np.abs(model.displacement_at(yy, xx) - truth).max(axis=-1)
    err_local = np.abs(full.displacement_at(yy, xx) - truth).max(axis=-1)
    inner = (slice(4, -4), slice(4, -4))
    assert np.median(err_local[inner]) < 0.1
    assert np.median(err_local[inner]) < 0.5 * np.median(err_global[inner])


def test_fuse_arrays_models_and_residuals_and_displacement_at(rotated_passes):
    frames, disps = rotated_passes
    out, res = fuse_arrays(frames, CRS, TRANSFORM, 2, reference=0)
    assert out.shape == (1, 512, 512) and np.isfinite(out).all()
    assert res.models[0] == "translation"
    assert all(m.startswith("affine") and m.endswith("+local") for m in res.models[1:])
    assert res.transforms.shape == (4, 3, 3)
    np.testing.assert_allclose(res.transforms[0], np.eye(3), atol=1e-12)
    yy, xx = np.mgrid[16:240:8, 16:240:8].astype(np.float64)
    for k in range(1, 4):
        err = np.abs(res.displacement_at(k, yy, xx) - disps[k](yy, xx)).max(axis=-1)
        assert np.median(err) < 0.1, (k, np.median(err))
    plain, res_t = fuse_arrays(frames, CRS, TRANSFORM, 2, reference=0, geometry="translation", local=False)
    assert res_t.models == ("translation",) * 4 and res_t.tie_points == (None,) * 4
    # a translation cannot follow the rotation: its error is several times larger
    k = 1
    err_t = np.median(np.abs(res_t.displacement_at(k, yy, xx) - disps[k](yy, xx)).max(axis=-1))
    err_f = np.median(np.abs(res.displacement_at(k, yy, xx) - disps[k](yy, xx)).max(axis=-1))
    assert err_t > 2 * err_f


def test_shifts_are_antisymmetric_and_pure_shifts_stay_translations():
    lr = 224
    coef = spline_filter(_scene(2 * lr + 16, seed=2), 3)
    shift = np.array([0.37, -0.81])
    frames = np.stack([
        _render(coef, (lr, lr), lambda y, x: np.zeros(np.shape(y) + (2,))),
        _render(coef, (lr, lr), lambda y, x: np.broadcast_to(shift, np.shape(y) + (2,))),
    ])[:, None]
    _, ab = fuse_arrays(frames, CRS, TRANSFORM, 2, reference=0)
    _, ba = fuse_arrays(frames, CRS, TRANSFORM, 2, reference=1)
    assert ab.models == ("translation", "translation") and ba.models == ab.models
    assert np.abs(ab.shifts[1] - shift).max() < 0.01
    assert np.abs(ab.shifts[1] + ba.shifts[0]).max() < 2e-3


def test_small_grids_keep_the_translation(rotated_passes):
    frames, _ = rotated_passes
    small = np.ascontiguousarray(frames[:, :, :150, :150])
    _, res = fuse_arrays(small, CRS, TRANSFORM, 2, reference=0)
    assert res.models == ("translation",) * 4
    assert res.tie_points == (None,) * 4


def _write_passes(folder, frames, stem: str = "pass") -> list:
    paths = []
    for k, f in enumerate(frames):
        p = folder / f"{stem}{k}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=f.shape[-1], height=f.shape[-2], count=1,
                           dtype="float32", crs=CRS, transform=TRANSFORM) as dst:
            dst.write(f)
        paths.append(p)
    return paths


def test_save_displacement_writes_the_tie_point_grid(tmp_path, rotated_passes):
    frames, _ = rotated_passes
    paths = _write_passes(tmp_path, frames)
    disp = tmp_path / "disp.tif"
    res = fuse_rasters(paths, tmp_path / "fused.tif", scale=2, reference=0, save_displacement=disp)
    assert res.displacement_path == disp
    with rasterio.open(disp) as src:
        assert src.count == 8 and src.crs == rasterio.crs.CRS.from_user_input(CRS)
        spacing = src.transform.a / TRANSFORM.a
        assert src.transform.c == TRANSFORM.c and src.transform.f == TRANSFORM.f
        assert src.descriptions[2] == "pass1.tif dy (px)" and src.tags(4)["MFSR_COMPONENT"] == "dx"
        data = src.read()
    rows = (np.arange(data.shape[1]) + 0.5) * spacing - 0.5
    cols = (np.arange(data.shape[2]) + 0.5) * spacing - 0.5
    expected = res.displacement_at(2, rows[:, None], cols[None, :])
    np.testing.assert_allclose(data[4], expected[..., 0], atol=1e-5)
    np.testing.assert_allclose(data[5], expected[..., 1], atol=1e-5)
    with pytest.raises(ValueError, match="save_displacement"):
        fuse_rasters(paths, tmp_path / "fused2.tif", scale=2, save_displacement=disp)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(geometry="homography"), ValueError, "geometry"),
    (dict(geometry=None), ValueError, "geometry"),
    (dict(local="yes"), TypeError, "local"),
])
def test_bad_geometry_options(kwargs, exc, match, rotated_passes):
    frames, _ = rotated_passes
    with pytest.raises(exc, match=match):
        fuse_arrays(frames[:, :, :40, :40], CRS, TRANSFORM, 2, **kwargs)


def test_cli_geometry_options_and_displacement(tmp_path, rotated_passes, capsys):
    from mfsr.cli import main

    frames, _ = rotated_passes
    paths = [str(p) for p in _write_passes(tmp_path, frames, "p")]
    disp = tmp_path / "disp.tif"
    assert main(["fuse", *paths, "-o", str(tmp_path / "a.tif"), "--reference", "0", "--save-displacement",
                 str(disp)]) == 0
    out = capsys.readouterr().out
    assert "affine+local" in out and "rot (deg)" in out and disp.exists()
    assert main(["fuse", *paths, "-o", str(tmp_path / "b.tif"), "--reference", "0", "--geometry", "translation",
                 "--no-local"]) == 0
    out = capsys.readouterr().out
    assert "affine" not in out and "+local" not in out
    # options of the passes' route are refused for image files
    png = tmp_path / "frame.png"
    from mfsr.image_io import write_image

    write_image(png, np.full((16, 16), 0.5, np.float32))
    assert main(["fuse", str(png), str(png), "-o", str(tmp_path / "c.png"), "--geometry", "affine"]) != 0
    assert "--geometry: only for georeferenced passes" in capsys.readouterr().err


def test_tiled_and_whole_agree_with_displaced_passes(rotated_passes):
    frames, _ = rotated_passes
    whole, res = fuse_arrays(frames, CRS, TRANSFORM, 2, reference=0, tile=1024)
    assert any(m.endswith("+local") for m in res.models)
    tiled, _ = fuse_arrays(frames, CRS, TRANSFORM, 2, reference=0, tile=64)
    np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=0)
