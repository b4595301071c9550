"""Calibrate the refinement strength per mode and scale on validation bursts.

Usage::

    python -m mfsr.refine.calibrate --dir DIR [--bursts 32] [--seed 20000] [--ensemble cfa=2]

For each mode (grey, rgb, cfa) and scale in :data:`SCALES`, ``--bursts``
bursts are simulated (each (mode, scale) bin from its own random stream,
so a larger ``--bursts`` adds bursts to the same ones and can only make the
worst-burst rule stricter) from the *training photographs* (no dead-leaves
textures: their piecewise-constant statistics reward edge-snapping that hurts
natural images) with the training degradation range (other seeds: these
bursts were never trained on, and the held-out photographs stay unseen),
fused with :func:`mfsr.fuse` and refined.
The strength ``a`` in ``fused + a * residual`` (``a`` in 0, 0.1, ..., 1) with
the highest mean PSNR gain (errors floored at 60 dB, :func:`floored_gain_db`)
*among those that lose no more than*
:data:`WORST_ALLOWED` dB *on any validation burst* (:func:`choose_strength`)
is written into ``DIR/manifest.json`` (``"strength"``; ``"strength_known_psf"``
for the same bursts refined with their optical blur given, ``psf_sigma``);
:func:`mfsr.refine.refine_image` interpolates it in ``log2(scale)``. Where the
network does not help, or helps on average but harms some bursts, the
refinement thus shrinks towards the plain fusion (fidelity first: the mean
alone keeps full strength where some bursts gain as much as others lose).
The weight files and their hashes are unchanged.

``--ensemble MODE=N`` (repeatable) refines that mode's bursts with the
geometric self-ensemble of ``N`` views (:func:`mfsr.refine.refine_image`'s
``ensemble``) and stores ``N`` in the manifest (``"ensemble"``), so that
``refine_image`` uses it by default with the strength fitted for it; modes
not named keep the manifest's size (1 where it has none).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..metrics import psnr
from ._inference import ENSEMBLES, native_bf16
from ._weights import MANIFEST, MODES
from .train import MSE_FLOOR, draw_burst, make_example, training_scenes

SCALES = (1.0, 1.5, 2.0, 3.0, 4.0)
STRENGTHS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
#: Largest loss (dB) a chosen strength may cause on any one validation burst.
WORST_ALLOWED = -0.1


def choose_strength(gains: np.ndarray) -> int:
    """Index of the strength to use, from validation gains.

    Parameters
    ----------
    gains : ndarray, shape (bursts, len(STRENGTHS))
        PSNR gain (dB) of each burst at each strength; column 0 is strength 0
        (gain 0 by definition).

    Returns
    -------
    int
        The column with the highest mean gain among those whose worst burst
        loses no more than :data:`WORST_ALLOWED` dB (column 0 qualifies always).
    """
    gains = np.asarray(gains, float)
    mean = gains.mean(axis=0)
    safe = gains.min(axis=0) >= WORST_ALLOWED
    safe[0] = True
    return int(np.argmax(np.where(safe, mean, -np.inf)))


def _mse(image: np.ndarray, truth: np.ndarray) -> float:
    """Mean squared error over all channels, 8 px border excluded (as the benchmarks crop)."""
    return 10.0 ** (-psnr(image, truth, crop=8) / 10.0)


def floored_gain_db(mse_refined: float, mse_fused: float) -> float:
    """PSNR gain (dB) of a refinement, both errors floored at the training loss's :data:`MSE_FLOOR`.

    ``10 log10((mse_fused + MSE_FLOOR) / (mse_refined + MSE_FLOOR))``: a fusion
    already better than 60 dB (RMS error below 0.1 % of full scale) cannot
    count a change far below that as a loss of several dB. The network was
    trained with this floor, so it does not try to be exact there; without it,
    one noiseless burst of a smooth scene, fused far above 60 dB, can set a
    strength alone.
    """
    return 10.0 * float(np.log10((mse_fused + MSE_FLOOR) / (mse_refined + MSE_FLOOR)))


def calibrate(folder: Path, *, bursts: int = 32, seed: int = 20_000, ensemble: dict[str, int] | None = None,
              log=print) -> dict:
    """Fit and store the per-(mode, scale) strength; returns the manifest.

    ``ensemble`` maps modes to self-ensemble sizes to calibrate and store
    (others keep the manifest's).
    """
    from ._inference import refine_image

    folder = Path(folder)
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    sizes = {mode: 1 for mode in MODES} | manifest.get("ensemble", {}) | dict(ensemble or {})
    for mode, n in sizes.items():
        if mode not in MODES or n not in ENSEMBLES:
            raise ValueError(f"ensemble: expected sizes in {ENSEMBLES} for modes {MODES}, got {mode}={n!r}")
    # photographs only: they stand in for the textures too
    photos, _ = training_scenes()
    pool = (photos, [(name, img) for name, img, _ in photos])
    # the strength for users who give the optical blur (psf_sigma) and for those who do not
    tables: dict[str, dict] = {"strength": {}, "strength_known_psf": {}}
    reports: dict[str, dict] = {"strength": {}, "strength_known_psf": {}}
    t0 = time.time()
    for m, mode in enumerate(MODES):
        weights = folder / manifest["modes"][mode]  # each mode may have its own network
        for key in tables:
            tables[key][mode], reports[key][mode] = {}, {}
        for k, scale in enumerate(SCALES):
            rng = np.random.default_rng([seed, m, k])
            gains = {key: np.zeros((bursts, len(STRENGTHS))) for key in tables}
            for i in range(bursts):
                cfg, _, burst = draw_burst(rng, pool, mode=mode, scale=scale)
                ex = make_example(burst, cfg)
                fused, conf, truth = ex.images()
                mse_fused = _mse(fused, truth)
                for key, psf in (("strength", None), ("strength_known_psf", cfg["blur_sigma"] / scale)):
                    out = refine_image(fused, conf, cfa="RGGB" if mode == "cfa" else None, scale=scale, noise=ex.info["noise_est"],
                                       weights=weights, strength=1.0, psf_sigma=psf, ensemble=sizes[mode])
                    for j, a in enumerate(STRENGTHS):
                        gains[key][i, j] = floored_gain_db(_mse(fused + a * (out - fused), truth), mse_fused)
            for key, g in gains.items():
                mean, worst = g.mean(axis=0), g.min(axis=0)
                best = choose_strength(g)
                tables[key][mode][f"{scale:g}"] = float(STRENGTHS[best])
                reports[key][mode][f"{scale:g}"] = [round(float(mean[-1]), 3), round(float(worst[-1]), 3),
                                                    round(float(mean[best]), 3), round(float(worst[best]), 3)]
                log(f"{mode} x{scale:g} {'psf known' if key.endswith('psf') else 'psf unknown'}: "
                    f"full strength {mean[-1]:+.2f} dB (worst burst {worst[-1]:+.2f}); "
                    f"strength {STRENGTHS[best]:.1f} -> {mean[best]:+.2f} dB (worst {worst[best]:+.2f}) "
                    f"({time.time() - t0:.0f} s)")
    manifest.update(tables)
    manifest["ensemble"] = sizes
    named = "".join(f" --ensemble {mode}={n}" for mode, n in sizes.items() if n != 1)
    manifest["calibration"] = {
        "command": f"python -m mfsr.refine.calibrate --dir {folder} --bursts {bursts} --seed {seed}{named}",
        "bursts_per_bin": bursts,
        "seed": seed,
        "data": "training photographs (no textures), training degradation range (mfsr.refine.train.draw_burst), unseen seeds",
        "rule": f"highest mean gain whose worst burst loses no more than {-WORST_ALLOWED:g} dB",
        "gain": f"10 log10((MSE fused + {MSE_FLOOR:g}) / (MSE refined + {MSE_FLOOR:g})), 8 px border excluded",
        "gain_db_full_mean_worst_and_calibrated_mean_worst": reports["strength"],
        "known_psf_gain_db_full_mean_worst_and_calibrated_mean_worst": reports["strength_known_psf"],
        "precision": "bf16" if native_bf16() else "fp32",
        "seconds": round(time.time() - t0, 1),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Calibrate the refinement strength per mode and scale.")
    parser.add_argument("--dir", required=True, type=Path, help="folder with refiner.pt and manifest.json")
    parser.add_argument("--bursts", type=int, default=32, help="validation bursts per mode and scale")
    parser.add_argument("--seed", type=int, default=20_000)
    parser.add_argument("--ensemble", action="append", default=[], type=_mode_size, metavar="MODE=N",
                        help=f"self-ensemble size for a mode ({', '.join(MODES)}; N in {ENSEMBLES}), repeatable")
    args = parser.parse_args(argv)
    calibrate(args.dir, bursts=args.bursts, seed=args.seed, ensemble=dict(args.ensemble),
              log=lambda *a: print(*a, flush=True))


def _mode_size(text: str) -> tuple[str, int]:
    """``"cfa=2"`` -> ``("cfa", 2)`` for ``--ensemble``."""
    mode, _, n = text.partition("=")
    if mode not in MODES or not n.isdigit() or int(n) not in ENSEMBLES:
        raise argparse.ArgumentTypeError(f"expected MODE=N with MODE in {MODES} and N in {ENSEMBLES}, got {text!r}")
    return mode, int(n)


if __name__ == "__main__":
    main()
