"""Hostile and careless inputs to ``mfsr fuse``: each case ends in a one-line error or a correct
output, and no input or existing output changes (hashes before and after)."""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import warnings
import zlib

import numpy as np
import pytest
import tifffile
from affine import Affine

from mfsr.cli import main
from mfsr.image_io import read_image, write_image

CRS = "EPSG:32633"
T = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)


def _hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def frames(tmp_path):
    """A folder of 4 small grey float32 TIFF frames with sub-pixel motion."""
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    base = rng.random((40, 40)).astype(np.float32)
    yy, xx = np.mgrid[:36, :36]
    for k in range(4):
        dy, dx = 0.25 * k, 0.5 * (k % 2)
        img = base[2:38, 2:38] * 0.5 + 0.25 * np.sin((yy + dy) / 3.0) * np.cos((xx + dx) / 4.0) + 0.3
        tifffile.imwrite(d / f"f{k}.tif", img.astype(np.float32))
    return d


def _geo_pass(path, data, georeferenced=True):
    import rasterio

    profile = dict(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype="float32")
    if georeferenced:
        profile.update(crs=CRS, transform=T)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data.astype(np.float32), 1)


def _run(argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    return rc, capsys.readouterr()


def _truncated_tiff(path):
    tifffile.imwrite(path, np.random.default_rng(1).integers(0, 65535, (64, 64), dtype=np.uint16),
                     compression="zlib")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(path, width, height, bit_depth, colour, raw_rows: bytes):
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                     + _png_chunk(b"IDAT", zlib.compress(raw_rows)) + _png_chunk(b"IEND", b""))


def _truncated_png16(path):
    rows = b"".join(b"\x00" + bytes(range(64)) for _ in range(16))  # 32 px of 16 bits per row
    _png(path, 32, 16, 16, 0, rows)
    data = path.read_bytes()
    path.write_bytes(data[:60])


def _png_bomb(path):
    # A few KB that declare 30000 x 30000 px.
    _png(path, 30000, 30000, 8, 0, b"\x00" * 30001 * 4)


def _declared_37gib_float_tiff(path):
    # A small float32 TIFF whose header is edited to declare 100000 x 100000 px (37 GiB of samples).
    tifffile.imwrite(path, np.zeros((16, 16), np.float32), compression="zlib")
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tags = tif.pages[0].tags
        tags["ImageWidth"].overwrite(100_000)
        tags["ImageLength"].overwrite(100_000)
        tags["RowsPerStrip"].overwrite(100_000)


CASES = {
    # id: (set-up on (tmp, frames folder) -> argv, expected rc, text expected in stderr)
    "output is an input": (lambda t, d: ["fuse", d, "-o", d / "f0.tif"], 2, "-o: "),
    "confidence is the output": (
        lambda t, d: ["fuse", d, "-o", t / "o.tif", "--save-confidence", t / "o.tif"], 2,
        "--save-confidence: "),
    "confidence is an input": (
        lambda t, d: ["fuse", d, "-o", t / "o.tif", "--save-confidence", d / "f1.tif"], 2,
        "--save-confidence: "),
    "output exists": (lambda t, d: ["fuse", d, "-o", t / "old.tif"], 2, "exists; give --overwrite"),
    "output folder missing": (lambda t, d: ["fuse", d, "-o", t / "no" / "o.tif"], 2, "-o: the folder of"),
    "output suffix unknown": (lambda t, d: ["fuse", d, "-o", t / "o.xyz"], 2, "-o: expected a .png, .tif, .tiff"),
    "confidence suffix": (
        lambda t, d: ["fuse", d, "-o", t / "o.tif", "--save-confidence", t / "c.jpg"], 2,
        "--save-confidence: expected"),
    "tile on images": (lambda t, d: ["fuse", d, "-o", t / "o.tif", "--tile", "256"], 2, "--tile: only for"),
    "scheduler on images": (
        lambda t, d: ["fuse", d, "-o", t / "o.tif", "--scheduler", "threads"], 2, "--scheduler: only for"),
    "cog on images": (lambda t, d: ["fuse", d, "-o", t / "o.tif", "--cog"], 2, "--cog: only for"),
    "noise in DN": (lambda t, d: ["fuse", d, "-o", t / "o.tif", "--noise", "4", "100"], 2, "noise: alpha 4"),
    "noise 1e30": (lambda t, d: ["fuse", d, "-o", t / "o.tif", "--noise", "1e30", "1e30"], 2, "imply a noise sigma"),
    "scale 1000": (lambda t, d: ["fuse", d, "-o", t / "o.tif", "--scale", "1000"], 2, "scale: fusing 4 frame(s)"),
    "truncated zlib tiff": (
        lambda t, d: (_truncated_tiff(t / "bad.tif"), ["fuse", d / "f0.tif", t / "bad.tif", "-o", t / "o.tif"])[1],
        2, "bad.tif: cannot read image"),
    "truncated 16-bit png": (
        lambda t, d: (_truncated_png16(t / "bad.png"), ["fuse", t / "bad.png", t / "bad.png", "-o", t / "o.tif"])[1],
        2, "bad.png: cannot read image"),
    "png decompression bomb": (
        lambda t, d: (_png_bomb(t / "bomb.png"), ["fuse", t / "bomb.png", t / "bomb.png", "-o", t / "o.tif"])[1],
        2, "bomb.png: the header declares 30000x30000"),
    "float tiff declaring 37 GiB": (
        lambda t, d: (_declared_37gib_float_tiff(t / "big.tif"),
                      ["fuse", d / "f0.tif", t / "big.tif", "-o", t / "o.tif"])[1],
        2, "big.tif: the header declares 100000x100000"),
    "plain tiff before georeferenced passes": (
        lambda t, d: ([_geo_pass(t / f"p{k}.tif", np.full((32, 32), 0.5), georeferenced=k > 0) for k in range(3)],
                      ["fuse", t / "p0.tif", t / "p1.tif", t / "p2.tif", "-o", t / "o.tif"])[1],
        2, "p1.tif is a georeferenced raster but"),
    "folder of tiffs and one dng": (
        lambda t, d: ((d / "x.dng").write_bytes(b"II*\x00"), ["fuse", d, "-o", t / "o.tif"])[1],
        2, "x.dng is a camera RAW but"),
    "geo output named png": (
        lambda t, d: ([_geo_pass(t / f"p{k}.tif", np.full((32, 32), 0.5)) for k in range(2)],
                      ["fuse", t / "p0.tif", t / "p1.tif", "-o", t / "o.png"])[1],
        2, "-o: expected a .tif, .tiff path"),
    "geo pass with refine option": (
        lambda t, d: ([_geo_pass(t / f"p{k}.tif", np.full((32, 32), 0.5)) for k in range(2)],
                      ["fuse", t / "p0.tif", t / "p1.tif", "-o", t / "o.tif", "--psf-sigma", "0.3"])[1],
        2, "--psf-sigma: only for camera RAW bursts and image files"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_run_is_one_line_and_changes_nothing(case, frames, tmp_path, capsys, monkeypatch):
    # The same memory limit on every machine, so "scale 1000" is refused everywhere
    # (its 36000 x 36000 output needs some 30 GiB).
    monkeypatch.setenv("MFSR_MAX_MEMORY", "8")
    setup, want_rc, message = CASES[case]
    write_image(tmp_path / "old.tif", np.full((8, 8), 0.5, np.float32))
    argv = setup(tmp_path, frames)
    before = _hashes(tmp_path)
    rc, out = _run([*argv, "-q"], capsys)
    assert rc == want_rc, out.err
    lines = [ln for ln in out.err.splitlines() if ln.startswith("mfsr: error")]
    assert len(lines) == 1 and message in lines[0], out.err
    assert "Traceback" not in out.err
    assert _hashes(tmp_path) == before  # no input or existing output changed, nothing new written


def test_overwrite_replaces_with_an_ordinary_mode(frames, tmp_path, capsys):
    out = tmp_path / "old.tif"
    write_image(out, np.full((8, 8), 0.5, np.float32))
    inputs = _hashes(frames)
    old = os.umask(0o022)
    try:
        rc, _ = _run(["fuse", frames, "-o", out, "--overwrite", "-q", "--scale", "1"], capsys)
    finally:
        os.umask(old)
    assert rc == 0
    assert read_image(out)[0].shape == (36, 36)
    assert out.stat().st_mode & 0o777 == 0o644
    assert _hashes(frames) == inputs


@pytest.mark.parametrize("fill", [-3.4e38, 1e30, np.nan, np.inf])
def test_fill_values_in_a_frame_are_replaced_and_counted(fill, frames, tmp_path, capsys):
    for k, window in ((0, np.s_[5:20, 5:20]), (2, np.s_[20:30, 10:16])):
        img = tifffile.imread(frames / f"f{k}.tif")
        img[window] = fill
        tifffile.imwrite(frames / f"f{k}.tif", img)
    out = tmp_path / "o.tif"
    rc, res = _run(["fuse", frames, "-o", out, "--scale", "2", "--dtype", "float32", "--no-refine"], capsys)
    assert rc == 0, res.err
    assert f"{15 * 15 + 10 * 6} sample(s) are NaN, infinite or beyond" in res.err
    fused, _ = read_image(out)
    clean = [tifffile.imread(frames / f"f{k}.tif") for k in (1, 3)]
    assert np.isfinite(fused).all()
    lo, hi = min(c.min() for c in clean), max(c.max() for c in clean)
    assert lo - 0.1 <= fused.min() and fused.max() <= hi + 0.1


def test_fuse_refuses_fill_values_naming_the_frames():
    from mfsr import fuse

    burst = np.full((3, 16, 16), 0.5, np.float32)
    burst[1, 3, 3] = 1e30
    with pytest.raises(ValueError, match=r"^frames: values beyond \+-1e\+06 in frame\(s\) \[1\]"):
        fuse(burst, scale=1)


def test_sigterm_during_the_write_leaves_no_temporary_file(frames, tmp_path, capsys, monkeypatch):
    import mfsr.image_io as image_io

    def killed_midway(path, data):
        path.write_bytes(b"partial")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(image_io, "_write_png", killed_midway)
    rc, res = _run(["fuse", frames, "-o", tmp_path / "o.png", "--scale", "1", "-q"], capsys)
    assert rc == 143 and "mfsr: terminated" in res.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_killed_run_s_temporary_file_is_removed_by_the_next_run(frames, tmp_path, capsys):
    # A temporary file of a process that no longer exists (pid 2**22 + 1 is beyond pid_max's default).
    stale = tmp_path / f".o.tif.mfsr-{2**22 + 1}-abc123.tmp"
    stale.write_bytes(b"x" * 100)
    rc, res = _run(["fuse", frames, "-o", tmp_path / "o.tif", "--scale", "1", "-q"], capsys)
    assert rc == 0
    assert not stale.exists() and "removed 1 temporary file(s) left by an interrupted run" in res.err


def test_exclusive_creation_fails_for_the_second_of_two_runs(tmp_path):
    from mfsr.atomic_file import atomic_output

    target = tmp_path / "o.bin"
    with pytest.raises(FileExistsError, match="exists"):
        with atomic_output(target, overwrite=False) as first:
            first.write_bytes(b"first")
            with atomic_output(target, overwrite=False) as second:
                second.write_bytes(b"second")
            # the second run finished first and owns the name; the first must not replace it
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.bin"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_output_folder_is_refused_up_front(frames, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc, res = _run(["fuse", frames, "-o", ro / "o.tif", "-q"], capsys)
    finally:
        ro.chmod(0o700)
    assert rc == 2 and "-o: cannot write to the folder" in res.err


def _passwd_vrt(path):
    # A VRT whose one band is /etc/passwd read as raw bytes.
    path.write_text(
        '<VRTDataset rasterXSize="16" rasterYSize="4">'
        '<SRS>EPSG:32633</SRS><GeoTransform>500000, 10, 0, 4000000, 0, -10</GeoTransform>'
        '<VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">'
        '<SourceFilename relativetoVRT="0">/etc/passwd</SourceFilename>'
        '<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>16</LineOffset>'
        '</VRTRasterBand></VRTDataset>'
    )


@pytest.mark.parametrize("name", ["a.vrt", "disguised.tif"])
def test_vrt_inputs_are_refused(name, tmp_path, capsys):
    from mfsr.geo import fuse_rasters

    _passwd_vrt(tmp_path / name)
    _geo_pass(tmp_path / "p.tif", np.full((4, 16), 0.5))
    before = _hashes(tmp_path)
    rc, res = _run(["fuse", tmp_path / name, tmp_path / "p.tif", "-o", tmp_path / "o.tif", "-q"], capsys)
    assert rc == 2 and "Traceback" not in res.err
    assert _hashes(tmp_path) == before
    with pytest.raises(ValueError, match="is a GDAL VRT, which can read other files"):
        fuse_rasters([tmp_path / "p.tif", tmp_path / name], tmp_path / "o.tif")


@pytest.mark.parametrize("path", ["/vsicurl/http://127.0.0.1:9/x.tif", "https://example.com/x.tif", "/vsizip/x.zip/a.tif"])
def test_network_and_virtual_paths_are_refused(path, tmp_path):
    from mfsr.geo import fuse_rasters

    _geo_pass(tmp_path / "p.tif", np.full((16, 16), 0.5))
    with pytest.raises(ValueError, match="path; mfsr reads local raster files only"):
        fuse_rasters([tmp_path / "p.tif", path], tmp_path / "o.tif")


def test_allow_vrt_reads_a_trusted_vrt(tmp_path, capsys):
    import rasterio

    for k in range(2):
        _geo_pass(tmp_path / f"p{k}.tif", np.random.default_rng(k).random((32, 32)))
    with rasterio.open(tmp_path / "p1.tif") as src:
        # A VRT of p1, written by GDAL itself.
        rasterio.shutil.copy(src, tmp_path / "p1.vrt", driver="VRT")
    argv = ["fuse", tmp_path / "p0.tif", tmp_path / "p1.vrt", "-o", tmp_path / "o.tif", "-q"]
    assert _run(argv, capsys)[0] == 2
    rc, res = _run([*argv, "--allow-vrt"], capsys)
    assert rc == 0, res.err
    assert "MFSR_ALLOW_VRT" not in os.environ


@pytest.mark.parametrize("fill", [-3.4e38, 1e30])
def test_geo_fill_values_are_masked_not_fused(fill, tmp_path):
    import rasterio

    from mfsr.geo import fuse_rasters

    yy, xx = np.mgrid[:48, :48]
    base = (0.5 + 0.3 * np.sin(yy / 4.0) * np.cos(xx / 5.0)).astype(np.float32)
    outs = {}
    for case in ("clean", "filled"):
        paths = []
        for k in range(3):
            data = base.copy()
            if case == "filled" and k < 2:  # the reference and a second pass carry an undeclared fill block
                data[10:26, 10:26] = fill
            _geo_pass(tmp_path / f"{case}{k}.tif", data)
            paths.append(tmp_path / f"{case}{k}.tif")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = fuse_rasters(paths, tmp_path / f"{case}-o.tif", scale=2, reference=0)
        counted = [str(w.message) for w in caught if "undeclared fill value" in str(w.message)]
        # the two passes carrying the block are named, with the 256 pixels of their one window
        assert len(counted) == (2 if case == "filled" else 0)
        assert all(" 256 pixels" in m for m in counted)
        with rasterio.open(tmp_path / f"{case}-o.tif") as src:
            outs[case] = src.read(1)
    out = outs["filled"]
    assert np.isfinite(out).all()
    assert res.valid_fractions[0] < 0.95 and res.valid_fractions[2] == 1.0  # counted as invalid
    assert out.min() >= outs["clean"].min() - 0.05 and out.max() <= outs["clean"].max() + 0.05


def test_geo_scale_1000_is_refused_before_reading(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MFSR_MAX_MEMORY", "8")
    for k in range(2):
        _geo_pass(tmp_path / f"p{k}.tif", np.full((64, 64), 0.5))
    before = _hashes(tmp_path)
    rc, res = _run(["fuse", tmp_path / "p0.tif", tmp_path / "p1.tif", "-o", tmp_path / "o.tif", "--scale", "1000",
                    "-q"], capsys)
    assert rc == 2 and "scale: fusing tiles of" in res.err and "GiB of memory" in res.err
    assert _hashes(tmp_path) == before
