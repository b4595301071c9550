"""Benchmark of global geometry correction (mfsr.geometry) inside fuse().

Prints markdown tables to stdout:

1. homography bursts (per-frame homographies, corners displaced up to
   ``max_shift + corner_shift`` px, small local warp, noise): corner error of
   ``FusionResult.transforms``, flow EPE and PSNR with and without
   ``geometry="homography"``, in ordinary and hard conditions;
2. ordinary bursts (:func:`mfsr.synth.simulate_burst`: translation and small
   rotation): PSNR without / with ``geometry="homography"``;
3. Brown-Conrady lens: PSNR against the rectified ground truth, fusion
   without correction vs ``distortion=coefficients``;
4. focus breathing: recovered relative k1 and flow EPE with
   ``distortion="estimate"``;
5. transform uncertainty (``--uncertainty``, or ``--only-uncertainty`` for
   this table alone): 128 px noisy Bayer crops of the real captures in
   ``../shared/data`` (the flattest and the most textured windows of the
   openISP mosaic and of an HDR+ frame, and the bundled retina photo) with
   simulated per-frame homographies: corner error of the transforms
   reported reliable and of those flagged, the share flagged, needless
   flags (flagged although within 0.1 px), and the fused PSNR without
   geometry, with the estimates used regardless (no fallback) and with each
   fallback (identity, the chain of simpler models, the chain then the
   unreliable estimate as the local registration's start, always or where
   it aligns the frame significantly better: the default), under
   perspective motion and under a pure translation; then the identity
   fallback's figures per reliability threshold.

Run: ``.venv/bin/python benchmarks/bench_geometry.py [--quick] [--uncertainty | --only-uncertainty]``.

Every ``fuse`` call here is the kernel fusion (``refine=False``), so the
geometry's own effect is measured.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from mfsr import fuse
from mfsr.alignment import Alignment, align
from mfsr.geometry import GeometryParams, UnreliableTransformWarning
from mfsr.merge import merge
from mfsr.metrics import corner_error, flow_epe, psnr
from mfsr.synth import sample_image, simulate_burst, simulate_geometric_burst

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t


def homography_table(scenes, n_frames, size):
    conds = [
        ("moderate noise", dict(max_shift=3, corner_shift=5, local_warp=0.05, alpha=2e-3, beta=2e-4)),
        ("no local warp", dict(max_shift=3, corner_shift=5, local_warp=0.0, alpha=2e-3, beta=2e-4)),
        ("local warp 0.1 px", dict(max_shift=3, corner_shift=5, local_warp=0.1, alpha=2e-3, beta=2e-4)),
        ("heavy noise", dict(max_shift=3, corner_shift=5, local_warp=0.05, alpha=2e-2, beta=2e-3)),
        ("large motion", dict(max_shift=8, corner_shift=8, local_warp=0.05, alpha=2e-3, beta=2e-4)),
        ("CFA RGGB", dict(max_shift=3, corner_shift=5, local_warp=0.05, alpha=2e-3, beta=2e-4, cfa="RGGB")),
    ]
    print("## Homography bursts (scale 2, %d frames, %d px frames)\n" % (n_frames, size // 2))
    print("| scene | condition | corner err median / max (px) | flagged (needless) | flagged frames use | "
          "flow EPE none / homography (px) | PSNR none / homography (dB) | gain (dB) | "
          "identity fallback: flow EPE (px) / gain (dB) | time none / homography (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    allerr = []
    for scene in scenes:
        grey = scene in ("camera", "moon")
        img = sample_image(scene, size=size, grey=grey)
        for label, kw in conds:
            if grey and "cfa" in kw:
                continue
            b = simulate_geometric_burst(img, n_frames=n_frames, scale=2, seed=11, **kw)
            r0, t0 = timed(lambda: fuse(b.frames, refine=False, scale=2, cfa=b.cfa, noise=b.noise))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UnreliableTransformWarning)
                r1, t1 = timed(lambda: fuse(b.frames, refine=False, scale=2, cfa=b.cfa, noise=b.noise,
                                            geometry="homography"))
                # the homography judged unreliable (the frame then reports a simpler model or is flagged)
                flagged = ~(r1.transform_reliable[1:] & (np.array(r1.transform_models[1:]) == "homography"))
                est = r1.transforms
                if flagged.any():  # the estimates themselves (flagged frames get the identity)
                    est = align(b.frames, b.cfa, 0, geometry="homography",
                                geometry_params=GeometryParams(fallback=False)).transforms
            e = corner_error(b.params["homographies"][1:], est[1:], b.frames.shape[1:3])
            needless = int((flagged & (e.max(1) <= UNC_GOAL)).sum())
            if label == "moderate noise":
                allerr.append(e.ravel())
            p0 = psnr(r0.image, b.ground_truth, crop=8)
            p1 = psnr(r1.image, b.ground_truth, crop=8)
            use, old = "-", "-"
            if flagged.any():
                models = np.array(r1.transform_models[1:])[flagged]
                use = ", ".join(f"{m} {int((models == m).sum())}" for m in dict.fromkeys(models))
                with warnings.catch_warnings():  # the fallback before the chain, for comparison
                    warnings.simplefilter("ignore", UnreliableTransformWarning)
                    rid = fuse(b.frames, refine=False, scale=2, cfa=b.cfa, noise=b.noise, geometry="homography",
                               geometry_params=GeometryParams(fallback_chain=False, start_from_unreliable="never"))
                old = (f"{flow_epe(rid.flow[1:], b.flow[1:]):.3f} / "
                       f"{psnr(rid.image, b.ground_truth, crop=8) - p0:+.2f}")
            print(f"| {scene} | {label} | {np.median(e):.3f} / {e.max():.3f} | {int(flagged.sum())} ({needless}) | "
                  f"{use} | {flow_epe(r0.flow[1:], b.flow[1:]):.3f} / {flow_epe(r1.flow[1:], b.flow[1:]):.3f} | "
                  f"{p0:.2f} / {p1:.2f} | {p1 - p0:+.2f} | {old} | {t0:.1f} / {t1:.1f} |", flush=True)
    print(f"\nMedian corner error over all 'moderate noise' frames and corners: "
          f"{np.median(np.concatenate(allerr)):.3f} px. Corner errors are of the estimates; flagged: frames "
          f"whose homography was judged unreliable, needless: of those, the ones within {UNC_GOAL:g} px at "
          "every corner; flagged frames use: their `transform_models` (a simpler model reported reliable, the "
          "homography as the flagged start of the local registration, or the identity); identity fallback: "
          "the same burst with every flagged frame on the local registration alone (the fallback before the "
          "chain).\n")


def ordinary_table(scenes, n_frames, size):
    print("## Ordinary bursts (simulate_burst: shifts up to 3 px, rotation up to 0.5 deg, blur 0.5)\n")
    print("| scene | input | PSNR none (dB) | PSNR homography (dB) | difference (dB) | flagged |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for scene in scenes:
        for label, kw in (("RGB", {}), ("Bayer", dict(cfa="RGGB")),
                          ("Bayer noisy", dict(cfa="RGGB", alpha=4e-3, beta=2e-4)), ("grey", {})):
            grey = label == "grey" or scene in ("camera", "moon")
            if grey and label != "grey":
                continue
            img = sample_image(scene, size=size, grey=grey)
            b = simulate_burst(img, n_frames=n_frames, scale=2, max_shift=3, max_rotation=0.5,
                               blur_sigma=0.5, seed=5, **kw)
            noise = b.noise if b.noise[0] > 0 else None
            p0 = psnr(fuse(b.frames, refine=False, scale=2, cfa=b.cfa, noise=noise).image, b.ground_truth, crop=8)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UnreliableTransformWarning)
                r1 = fuse(b.frames, refine=False, scale=2, cfa=b.cfa, noise=noise, geometry="homography")
            p1 = psnr(r1.image, b.ground_truth, crop=8)
            worst = min(worst, p1 - p0)
            flagged = ~(r1.transform_reliable[1:] & (np.array(r1.transform_models[1:]) == "homography"))
            models = np.array(r1.transform_models[1:])[flagged]
            use = ", ".join(f"{m} {int((models == m).sum())}" for m in dict.fromkeys(models))
            print(f"| {scene} | {label} | {p0:.3f} | {p1:.3f} | {p1 - p0:+.3f} | "
                  f"{int(flagged.sum())}{f' ({use})' if use else ''} |", flush=True)
    print(f"\nWorst difference: {worst:+.3f} dB\n")


def lens_table(scenes, n_frames, size):
    print("## Known Brown-Conrady lens (PSNR against the rectified ground truth)\n")
    print("| scene | lens (k1, k2) | no correction (dB) | distortion=coeffs (dB) | gain (dB) | "
          "rectified-flow EPE (px) |")
    print("|---|---|---|---|---|---|")
    for scene in scenes:
        img = sample_image(scene, size=size, grey=scene in ("camera", "moon"))
        for lens in ([0.05], [0.1], [-0.08, 0.01]):
            b = simulate_geometric_burst(img, n_frames=n_frames, scale=2, max_shift=2, corner_shift=1,
                                         distortion=lens, alpha=1e-3, beta=1e-4, seed=7)
            p0 = psnr(fuse(b.frames, refine=False, scale=2, noise=b.noise).image, b.ground_truth, crop=8)
            r = fuse(b.frames, refine=False, scale=2, noise=b.noise, distortion=lens, geometry="homography")
            p1 = psnr(r.image, b.ground_truth, crop=8)
            epe = flow_epe(r.flow, b.params["rectified_flow"])
            print(f"| {scene} | {tuple(lens)} | {p0:.2f} | {p1:.2f} | {p1 - p0:+.2f} | {epe:.3f} |",
                  flush=True)
    print()


def breathing_table(scenes, n_frames, size):
    print("## Focus breathing (base k1 = 0.05, per-frame k1 +- 0.02), distortion='estimate'\n")
    print("| scene | max abs k1 error | flow EPE none / estimate (px) |")
    print("|---|---|---|")
    for scene in scenes:
        img = sample_image(scene, size=size, grey=scene in ("camera", "moon"))
        b = simulate_geometric_burst(img, n_frames=n_frames, scale=2, max_shift=2, corner_shift=0.5,
                                     distortion=[0.05], breathing=0.02, alpha=1e-3, beta=1e-4, seed=9)
        r0 = fuse(b.frames, refine=False, scale=2, noise=b.noise)
        r = fuse(b.frames, refine=False, scale=2, noise=b.noise, geometry="homography", distortion="estimate")
        err = np.abs(r.distortion[:, 0] - (b.params["distortion"][:, 0] - 0.05)).max()
        print(f"| {scene} | {err:.4f} | {flow_epe(r0.flow[1:], b.flow[1:]):.3f} / "
              f"{flow_epe(r.flow[1:], b.flow[1:]):.3f} |", flush=True)
    print()


# ----------------------------------------------------------------------------- transform uncertainty

#: Noise levels of the uncertainty table (variance ``alpha * I + beta``): the
#: homography table's moderate and heavy noise.
UNC_NOISE = {"moderate": (2e-3, 2e-4), "heavy": (2e-2, 2e-3)}
#: Reliability thresholds (corner uncertainty, input px) of the sweep; inf: the model checks alone.
UNC_THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.3, np.inf)
#: A transform counts as accurate within this corner error (input px).
UNC_GOAL = 0.1


def _windows(grey: np.ndarray, size: int, step: int):
    """Mean absolute first difference of every ``size`` window on a ``step`` grid: [(texture, y, x)]."""
    out = []
    for y in range(0, grey.shape[0] - size + 1, step):
        for x in range(0, grey.shape[1] - size + 1, step):
            c = grey[y:y + size, x:x + size]
            out.append((0.5 * (np.abs(np.diff(c, axis=0)).mean() + np.abs(np.diff(c, axis=1)).mean()), y, x))
    return sorted(out)


def uncertainty_scenes(size: int = 256) -> list[tuple[str, str, np.ndarray]]:
    """(name, kind, linear RGB scene) crops: the flattest ("low texture") and
    the most textured ``size`` window of each real capture on a half-window
    grid, and the bundled retina photo (a low-texture case of the issue)."""
    from mfsr.image_io import read_image
    from mfsr.raw_io import read_headerless

    scenes = []
    raw = DATA / "bayer_openisp" / "openISP_test_1920x1080_RGGB_10bit_u16le.RAW"
    hdr = DATA / "hdrplus_burst" / "frame-000.jpg"
    if raw.exists():
        m = read_headerless(raw, width=1920, height=1080, bits=10, cfa="RGGB").mosaic
        # the mosaic's RGGB cells as RGB pixels: real sensor content for the simulator
        rgb = np.stack([m[0::2, 0::2], (m[0::2, 1::2] + m[1::2, 0::2]) / 2, m[1::2, 1::2]], -1).astype(np.float32)
        scenes.append(("openisp", rgb))
    if hdr.exists():
        scenes.append(("hdrplus", read_image(hdr)[0]))
    out = []
    for name, img in scenes:
        w = _windows(img.mean(-1), size, size // 2)
        for kind, (t, y, x) in (("low texture", w[0]), ("textured", w[-1])):
            crop = np.ascontiguousarray(img[y:y + size, x:x + size])
            out.append((f"{name} ({y}, {x}), mean {crop.mean():.3f}", kind, crop))
    out.append(("retina (skimage)", "low texture", sample_image("retina", size=size)))
    return out


def _mixed(est: Alignment, plain: Alignment, use_model: np.ndarray) -> Alignment:
    """The alignment the fallback makes: the model's flow where ``use_model``,
    the plain tile registration's elsewhere (what ``global_registration``
    does with ``fallback``; checked against it at the default threshold)."""
    dense = est.flows.copy()
    spreads = list(est.spreads)
    for k in np.flatnonzero(~use_model):
        dense[k] = plain.frame_flow(k)
        spreads[k] = plain.spreads[k]
    return Alignment(est.frame_shape, spreads, dense)


#: Fallback variants of the uncertainty table (``GeometryParams`` fields): the identity
#: fallback alone (before the chain), the chain of simpler models, and the chain with the
#: unreliable estimate still starting the local registration, always or where that aligns
#: the frame better (the default).
UNC_VARIANTS = {
    "identity": dict(fallback_chain=False, start_from_unreliable="never"),
    "chain": dict(fallback_chain=True, start_from_unreliable="never"),
    "chain + start": dict(fallback_chain=True, start_from_unreliable="always"),
    "chain + start if better": dict(fallback_chain=True, start_from_unreliable="if better"),
}
#: Motions of the uncertainty table: per-frame homographies (every corner moved up to 5 px
#: on top of a common shift up to 3 px), and the common shift alone (a pure translation, which
#: every simpler model represents).
UNC_MOTIONS = {"perspective": dict(max_shift=3, corner_shift=5), "translation": dict(max_shift=3, corner_shift=0)}


def _pick_errors(chain: dict, cell: dict, picked: np.ndarray) -> str:
    """Largest corner error of the chain's reliable simpler models and of the
    homography estimates of the same frames."""
    if not picked.any():
        return "-"
    return f"{chain['err'][picked].max():.3f} / {cell['err'][picked].max():.3f}"


def uncertainty_table(quick: bool):
    scenes = uncertainty_scenes()
    if not any(kind == "textured" for _, kind, _ in scenes):
        print(f"## Transform uncertainty: skipped, no real captures under {DATA}\n")
        return
    seeds = (11,) if quick else (11, 12, 13)
    n_frames, cfa, scale = 6, "RGGB", 2
    default = GeometryParams()
    # estimates used regardless (the identity only where one is degenerate), model checks only:
    # the threshold is applied below
    free = GeometryParams(max_corner_uncertainty=np.inf, fallback_chain=False, start_from_unreliable="always")
    variants = {v: GeometryParams(**kw) for v, kw in UNC_VARIANTS.items()}
    rows = []
    for mname, motion in UNC_MOTIONS.items():
        for name, kind, scene in scenes:
            for nname, (a, b) in UNC_NOISE.items():
                cell = dict(err=[], unc=[], checks=[], p0=[], p_est=[], p_fb={}, rep={v: [] for v in variants})
                for seed in seeds:
                    bb = simulate_geometric_burst(scene, n_frames=n_frames, scale=scale, cfa=cfa, local_warp=0.05,
                                                  alpha=a, beta=b, seed=seed, **motion)
                    frames, noise = bb.frames, bb.noise
                    shape = frames.shape[1:3]
                    true = bb.params["homographies"][1:]
                    plain = align(frames, cfa, 0)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UnreliableTransformWarning)
                        est = align(frames, cfa, 0, geometry="homography", geometry_params=free)
                        als = {v: align(frames, cfa, 0, geometry="homography", geometry_params=gp)
                               for v, gp in variants.items()}
                    gt = bb.ground_truth

                    def score(al):
                        return psnr(merge(frames, al, scale=scale, cfa=cfa, reference=0, noise=noise).image, gt,
                                    crop=8)

                    cell["err"].append(corner_error(true, est.transforms[1:], shape).max(1))
                    cell["unc"].append(est.transform_uncertainty[1:])
                    cell["checks"].append(est.transform_reliable[1:])
                    cell["p0"].append(score(plain))
                    cell["p_est"].append(score(est))
                    if mname == "perspective":
                        for t in sorted(set(UNC_THRESHOLDS) | {default.max_corner_uncertainty}):
                            use = est.transform_reliable & (est.transform_uncertainty <= t)
                            cell["p_fb"].setdefault(t, []).append(score(_mixed(est, plain, use)))
                    for v, al in als.items():
                        cell["rep"][v].append(dict(
                            psnr=score(al), reliable=al.transform_reliable[1:],
                            models=np.array(al.transform_models[1:]),
                            err=corner_error(true, al.transforms[1:], shape).max(1)))
                    # the sweep's shortcut is the pipeline's own identity fallback
                    if mname == "perspective":
                        fb = cell["p_fb"][default.max_corner_uncertainty][-1]
                        assert abs(fb - cell["rep"]["identity"][-1]["psnr"]) < 1e-3
                c = {k: (np.concatenate(v) if k in ("err", "unc", "checks") else v) for k, v in cell.items()}
                c["rep"] = {v: {key: (np.mean([r[key] for r in rs]) if key == "psnr"
                                      else np.concatenate([r[key] for r in rs])) for key in rs[0]}
                            for v, rs in cell["rep"].items()}
                rows.append((mname, name, kind, nname, c))
    thr = default.max_corner_uncertainty
    print(f"## Transform uncertainty: 128 px noisy Bayer crops of real captures (scale 2, {n_frames} frames, "
          f"{len(seeds)} burst(s) each, threshold {thr:g} px)\n")
    print("| motion | crop | kind | noise | frames | homography unreliable | needless | chain picks | "
          "corner err of reported reliable, median / max (px) | of the chain's picks / of their homographies, "
          "max (px) | "
          "PSNR none / no fallback / identity / chain / chain + start / chain + start if better (dB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")

    def med_max(e):
        return f"{np.median(e):.3f} / {e.max():.3f}" if len(e) else "-"

    for mname, name, kind, nname, c in rows:
        flag = ~(c["checks"] & (c["unc"] <= thr))
        needless = int((flag & (c["err"] <= UNC_GOAL)).sum())
        ch = c["rep"]["chain"]
        picked = ch["reliable"] & (ch["models"] != "homography")
        picks = ", ".join(f"{m} {int((ch['models'][picked] == m).sum())}"
                          for m in ("affine", "similarity", "translation") if (ch["models"][picked] == m).any())
        p = " / ".join(f"{x:.2f}" for x in (np.mean(c["p0"]), np.mean(c["p_est"]),
                                             *(c["rep"][v]["psnr"] for v in variants)))
        print(f"| {mname} | {name} | {kind} | {nname} | {len(flag)} | {flag.mean():.0%} | {needless} | "
              f"{picks or '-'} | {med_max(ch['err'][ch['reliable']])} | {_pick_errors(ch, c, picked)} | {p} |",
              flush=True)
    print("\nhomography unreliable: frames whose homography is flagged; needless: of those, the ones within "
          f"{UNC_GOAL:g} px at every corner; chain picks: the reliable simpler models the chain reported in their "
          "place (their largest corner error, and that of the homography estimates they replace); corner "
          "errors are of the reported transforms (`transforms` with the chain) flagged reliable, against the "
          "true homography; PSNR is the mean over the crop's bursts: no fallback uses every "
          "estimate (the identity where one is degenerate), identity the local registration alone for a "
          "flagged frame, chain the simpler models then the identity, chain + start the simpler models then "
          "the unreliable estimate as the local registration's start, chain + start if better (the default) "
          "that start only where it aligns the frame significantly better than the local registration "
          "alone.\n")
    print("| motion | kind | frames | reported reliable: homography / simpler | max corner err of reported "
          "reliable (px) | PSNR - identity: no fallback / chain / chain + start / chain + start if better (dB) |")
    print("|---|---|---|---|---|---|")
    for mname in UNC_MOTIONS:
        for kind in ("low texture", "textured"):
            sel = [c for m, _, k, _, c in rows if m == mname and k == kind]
            ch = [c["rep"]["chain"] for c in sel]
            rel = np.concatenate([r["reliable"] for r in ch])
            mod = np.concatenate([r["models"] for r in ch])
            err = np.concatenate([r["err"] for r in ch])
            d = [np.mean([c["p_est"] if v == "est" else c["rep"][v]["psnr"] for c in sel])
                 - np.mean([c["rep"]["identity"]["psnr"] for c in sel]) for v in ("est", *list(variants)[1:])]
            print(f"| {mname} | {kind} | {len(rel)} | {int((rel & (mod == 'homography')).sum())} / "
                  f"{int((rel & (mod != 'homography')).sum())} | {err[rel].max() if rel.any() else float('nan'):.3f} | "
                  + " / ".join(f"{x:+.2f}" for x in d) + " |", flush=True)
    print()
    print("### Reliability threshold sweep (perspective motion, all crops and noise levels above; identity fallback)\n")
    print("| threshold (px) | kind | flagged | reliable within 0.1 px | max corner err of reliable (px) | "
          "needless flags | PSNR fallback - no fallback (dB) | PSNR fallback - none (dB) |")
    print("|---|---|---|---|---|---|---|---|")
    for t in UNC_THRESHOLDS:
        for kind in ("low texture", "textured"):
            sel = [c for m, _, k, _, c in rows if k == kind and m == "perspective"]
            err = np.concatenate([c["err"] for c in sel])
            flag = ~np.concatenate([c["checks"] & (c["unc"] <= t) for c in sel])
            d_est = np.mean([np.mean(c["p_fb"][t]) - np.mean(c["p_est"]) for c in sel])
            d_none = np.mean([np.mean(c["p_fb"][t]) - np.mean(c["p0"]) for c in sel])
            ok = err[~flag]
            within = f"{(ok <= UNC_GOAL).mean():.0%}" if len(ok) else "-"
            worst = f"{ok.max():.3f}" if len(ok) else "-"
            print(f"| {t:g} | {kind} | {flag.mean():.0%} | {within} | {worst} | "
                  f"{int((flag & (err <= UNC_GOAL)).sum())} of {int((err <= UNC_GOAL).sum())} | "
                  f"{d_est:+.2f} | {d_none:+.2f} |", flush=True)
    print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer scenes")
    ap.add_argument("--uncertainty", action="store_true", help="also the transform-uncertainty table")
    ap.add_argument("--only-uncertainty", action="store_true", help="the transform-uncertainty table alone")
    args = ap.parse_args()
    if not args.only_uncertainty:
        scenes = ["astronaut", "coffee"] if args.quick else ["astronaut", "coffee", "dead_leaves", "moon"]
        n, size = 6, 256
        homography_table(scenes, n, size)
        ordinary_table(scenes, n, size)
        lens_table(scenes[:2] if args.quick else scenes[:3], n, size)
        breathing_table(scenes, n, size)
    if args.uncertainty or args.only_uncertainty:
        uncertainty_table(args.quick)


if __name__ == "__main__":
    main()
