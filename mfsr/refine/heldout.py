"""Which bundled images train the refinement network and which only evaluate it.

Images come from :func:`mfsr.synth.sample_image` (photographs bundled in the
scikit-image wheel, no download) plus procedural dead-leaves textures. The
held-out photographs are the ones :mod:`benchmarks.bench_quality` scores the
fusion on, so the refinement's gain is measured on scenes it never saw.
"""

from __future__ import annotations

__all__ = ["HELDOUT_IMAGES", "EXCLUDED_IMAGES", "TRAIN_IMAGES", "TRAIN_EXTRA_PHOTOS", "TRAIN_DEAD_LEAVES_SEEDS"]

#: Evaluation only (benchmarks/bench_refine.py); never seen in training.
HELDOUT_IMAGES: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")

#: Kept out of training too: a stereo twin of a held-out photograph.
EXCLUDED_IMAGES: tuple[str, ...] = ("motorcycle_right",)

#: Training photographs (names of :data:`mfsr.synth.SAMPLE_IMAGES`): colour
#: ones first, then grey ones (colourised at random for RGB/CFA training).
TRAIN_IMAGES: tuple[str, ...] = (
    "retina",
    "hubble_deep_field",
    "immunohistochemistry",
    "camera",
    "brick",
    "grass",
    "gravel",
    "moon",
    "coins",
    "page",
    "text",
)

#: Training photographs bundled with other packages (``pip install mfsr[train]``):
#: ``(name, package, file inside the package, area downsampling factor)``.
#: scikit-image's only natural colour photographs are held out, so without
#: these the network would learn colour from microscopy, a Hubble field and
#: tinted grey photos; china and flower are JPEGs, downsampled by 2 so their
#: compression artefacts do not become "ground truth" detail.
TRAIN_EXTRA_PHOTOS: tuple[tuple[str, str, str, int], ...] = (
    ("china", "sklearn", "datasets/images/china.jpg", 2),
    ("flower", "sklearn", "datasets/images/flower.jpg", 2),
    ("aero", "pywt", "data/aero.npz", 1),
    ("ascent", "pywt", "data/ascent.npz", 1),
)

#: Seeds of the dead-leaves training textures (held-out evaluation uses none).
TRAIN_DEAD_LEAVES_SEEDS: tuple[int, ...] = tuple(range(1000, 1016))
