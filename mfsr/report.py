"""Pictures for people: side-by-side comparisons, difference maps, flow fields.

Numbers tell whether a fusion helped; pictures show where. These functions
turn linear float images into sRGB uint8 pictures (arrays in, arrays out);
the callers write them with :func:`mfsr.image_io.write_image`.
"""

from __future__ import annotations

import numpy as np

from .transfer import REC709_LUMA, linear_to_srgb


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(panel)
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 0, 8 + 7 * len(text), 16), fill=(0, 0, 0))
    draw.text((4, 3), text, fill=(255, 255, 255))
    return np.asarray(im)


def comparison_picture(
    panels: list[tuple[str, np.ndarray]],
    *,
    crop: tuple[int, int, int] | None = None,
    zoom: int = 3,
    max_width: int | None = None,
) -> np.ndarray:
    """Side-by-side picture of images of one size, labelled.

    Parameters
    ----------
    panels : list of (title, image)
        Linear float grey (H, W) or RGB (H, W, 3) images of one shape, or
        uint8 RGB pictures already sRGB-encoded (e.g. :func:`difference_map`).
    crop : (y, x, size), optional
        Add a second row with this square region of every panel at full
        resolution, enlarged ``zoom`` times by pixel replication (``zoom=1``
        shows it at 100 %).
    zoom : int
        Enlargement of the crops.
    max_width : int, optional
        Shrink the top row (whole images, by an integer area-mean factor)
        so it is at most about this wide; the crops stay at full resolution.

    Returns
    -------
    ndarray of uint8, shape (rows, cols, 3), sRGB-encoded
    """

    def encode(image: np.ndarray) -> np.ndarray:
        if image.dtype == np.uint8:
            return image
        rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        return np.rint(np.clip(linear_to_srgb(rgb), 0, 1) * 255).astype(np.uint8)

    def strip(images: list[tuple[str, np.ndarray]]) -> np.ndarray:
        gap = np.full((images[0][1].shape[0], 4, 3), 255, np.uint8)
        row = []
        for i, (title, enc) in enumerate(images):
            row += [_label(enc, title)] + ([gap] if i + 1 < len(images) else [])
        return np.concatenate(row, axis=1)

    def shrink(enc: np.ndarray, f: int) -> np.ndarray:
        if f == 1:
            return enc
        h, w = (enc.shape[0] // f) * f, (enc.shape[1] // f) * f
        return enc[:h, :w].reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3)).round().astype(np.uint8)

    encoded = [(title, encode(image)) for title, image in panels]
    width = sum(enc.shape[1] for _, enc in encoded)
    factor = 1 if max_width is None else max(1, int(np.ceil(width / max_width)))
    rows = [strip([(t + (f" (1/{factor})" if factor > 1 else ""), shrink(e, factor)) for t, e in encoded])]
    if crop is not None:
        y, x, size = crop
        label = "100%" if zoom == 1 else f"x{zoom}"
        zoomed = [
            (f"{title} ({label})", np.kron(enc[y : y + size, x : x + size], np.ones((zoom, zoom, 1), np.uint8)))
            for title, enc in encoded
        ]
        rows += [strip(zoomed)]
    full = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, full - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    gap = np.full((4, full, 3), 255, np.uint8)
    out = [rows[0]]
    for r in rows[1:]:
        out += [gap, r]
    return np.concatenate(out, axis=0)


def detail_crop(image: np.ndarray, size: int) -> tuple[int, int, int]:
    """The square region of ``image`` with the most detail, as ``(y, x, size)``.

    Detail is the gradient energy of the luminance summed over blocks on a
    grid of half the crop size; a report shows that crop because flat sky
    tells nothing about resolution.
    """
    g = image.mean(axis=2) if image.ndim == 3 else image
    h, w = g.shape
    size = int(min(size, h, w))
    gy, gx = np.gradient(np.asarray(g, np.float32))
    energy = gy * gy + gx * gx
    step = max(1, size // 2)
    best, where = -1.0, (0, 0)
    for y in range(0, h - size + 1, step):
        for x in range(0, w - size + 1, step):
            e = float(energy[y : y + size, x : x + size].sum())
            if e > best:
                best, where = e, (y, x)
    return where[0], where[1], size


def difference_map(image: np.ndarray, baseline: np.ndarray, *, percentile: float = 99.5) -> np.ndarray:
    """Signed luminance difference ``image - baseline`` as a diverging colour map.

    Parameters
    ----------
    image, baseline : ndarray, shape (H, W) or (H, W, 3)
        Linear images of one shape.
    percentile : float
        The ``percentile`` of ``|difference|`` maps to full colour, so a
        few extreme pixels do not wash the map out.

    Returns
    -------
    picture : ndarray of uint8, shape (H, W, 3)
        White where nothing changed, red where ``image`` is brighter, blue
        where it is darker, in sRGB-encoded luminance units.
    limit : float
        The difference (sRGB-encoded units, 0 to 1) shown at full colour.
    """
    if image.shape != baseline.shape:
        raise ValueError(f"baseline: shape {baseline.shape} differs from image {image.shape}")

    def luma(x: np.ndarray) -> np.ndarray:
        x = np.clip(x, 0, None)
        return linear_to_srgb(x @ REC709_LUMA if x.ndim == 3 else x)

    diff = luma(image) - luma(baseline)
    limit = max(float(np.percentile(np.abs(diff), percentile)), 1e-6)
    t = np.clip(diff / limit, -1, 1)
    pos, neg = np.clip(t, 0, 1), np.clip(-t, 0, 1)
    rgb = np.stack([1 - neg, 1 - pos - neg, 1 - pos], axis=-1)
    return np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8), limit


def flow_picture(flow: np.ndarray, *, max_norm: float | None = None) -> np.ndarray:
    """Colour-code a flow field: hue is direction, saturation is magnitude.

    Parameters
    ----------
    flow : ndarray, shape (H, W, 2)
        (dy, dx) in pixels.
    max_norm : float, optional
        Magnitude shown at full saturation; the field's maximum when None.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
        White for no motion; red for motion to +x (right), olive-green to
        +y (down), cyan to -x, blue-violet to -y.
    """
    flow = np.asarray(flow, np.float32)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow: expected shape (H, W, 2), got {flow.shape}")
    dy, dx = flow[..., 0], flow[..., 1]
    norm = np.hypot(dx, dy)
    top = float(norm.max()) if max_norm is None else float(max_norm)
    sat = np.clip(norm / max(top, 1e-6), 0, 1)
    hue = (np.arctan2(dy, dx) / (2 * np.pi)) % 1.0
    # HSV -> RGB with value 1, as a smooth cosine wheel (no branch per sector).
    phases = np.array([0.0, 2.0 / 3.0, 1.0 / 3.0], np.float32)
    wheel = 0.5 + 0.5 * np.cos(2 * np.pi * (hue[..., None] - phases))
    rgb = 1 - sat[..., None] * (1 - wheel)
    return np.rint(rgb * 255).astype(np.uint8)


def flow_overview(flows: np.ndarray, *, columns: int = 4, width: int = 320) -> np.ndarray:
    """All frames' flows side by side, one colour scale, labelled by frame index.

    Parameters
    ----------
    flows : ndarray, shape (N, H, W, 2)
        (dy, dx) in input pixels (e.g. :attr:`mfsr.FusionResult.flow`).
    columns : int
        Thumbnails per row.
    width : int
        Thumbnail width in pixels (the height keeps the aspect ratio).

    Returns
    -------
    ndarray of uint8, shape (rows, cols, 3)
    """
    flows = np.asarray(flows, np.float32)
    n, h, w = flows.shape[:3]
    step = max(1, int(np.ceil(w / width)))
    top = float(np.hypot(flows[..., 0], flows[..., 1]).max())
    thumbs = []
    for k in range(n):
        pic = flow_picture(flows[k, ::step, ::step], max_norm=top)
        thumbs.append(_label(pic, f"frame {k}" + (f", max {top:.2f} px" if k == 0 else "")))
    th, tw = thumbs[0].shape[:2]
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    sheet = np.full((rows * (th + 4), columns * (tw + 4), 3), 255, np.uint8)
    for k, pic in enumerate(thumbs):
        r, c = divmod(k, columns)
        sheet[r * (th + 4) : r * (th + 4) + th, c * (tw + 4) : c * (tw + 4) + tw] = pic
    return sheet
