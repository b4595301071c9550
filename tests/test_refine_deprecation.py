"""refine_image's ``cfa=``: a Bayer pattern or None; the old bool form still works, with a warning (issue 18)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mfsr.cfa import PATTERNS
from mfsr.refine import RefineNet, refine_image

NOISE = (1e-3, 1e-5)


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.random(shape, dtype=np.float32)
    conf = (rng.random(shape[:2], dtype=np.float32) * 6.0).astype(np.float32)
    return img, conf


def _random_net(seed=0) -> RefineNet:
    """A small network with a non-zero residual (the shipped tail starts at zero by design)."""
    torch.manual_seed(seed)
    net = RefineNet(channels=8, blocks=2)
    torch.nn.init.normal_(net.tail.weight, std=0.1)
    return net.eval()


def _refine(img, conf, cfa, **kw):
    return refine_image(img, conf, cfa=cfa, scale=2.0, noise=NOISE, precision="fp32", **kw)


def test_patterns_refine_as_cfa_true():
    """Every pattern (any case) selects the shipped mosaic weights, as cfa=True did: same result."""
    img, conf = _inputs((24, 28, 3), seed=1)
    with pytest.warns(DeprecationWarning):
        old = _refine(img, conf, True)
    for pattern in PATTERNS + ("rggb", "gBrG"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the pattern form does not warn
            new = _refine(img, conf, pattern)
        # one code path after the argument check: identical, not merely close
        np.testing.assert_array_equal(new, old)
    # and the mosaic weights are not the RGB ones (the test would be void otherwise)
    assert not np.array_equal(old, _refine(img, conf, None))


@pytest.mark.parametrize("shape", [(20, 22), (20, 22, 3)])
def test_none_refines_as_cfa_false(shape):
    img, conf = _inputs(shape, seed=2)
    with pytest.warns(DeprecationWarning):
        old = _refine(img, conf, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = _refine(img, conf, None)
    np.testing.assert_array_equal(new, old)


def test_global_features_follow_the_pattern():
    """With a given network (no mode lookup) the mosaic flag still reaches the network's global features."""
    img, conf = _inputs((20, 24, 3), seed=3)
    net = _random_net()
    with pytest.warns(DeprecationWarning):
        old_true, old_false = _refine(img, conf, True, weights=net), _refine(img, conf, False, weights=net)
    np.testing.assert_array_equal(_refine(img, conf, "BGGR", weights=net), old_true)
    np.testing.assert_array_equal(_refine(img, conf, None, weights=net), old_false)
    assert not np.array_equal(old_true, old_false)


@pytest.mark.parametrize("value, instead", [(True, "'RGGB', 'BGGR', 'GRBG', 'GBRG'"), (False, "cfa=None"),
                                            (np.bool_(True), "'RGGB'")])
def test_bool_warns_with_the_replacement_at_the_caller(value, instead):
    img, conf = _inputs((16, 16, 3), seed=4)
    with pytest.warns(DeprecationWarning, match=r"cfa=(True|False) is deprecated") as record:
        _refine(img, conf, value, weights=_random_net())
    (w,) = [r for r in record if issubclass(r.category, DeprecationWarning)]
    assert instead in str(w.message)
    assert w.filename == __file__  # points at the call, not into mfsr


@pytest.mark.parametrize("bad", ["RGBG", "", "bayer", 1, 0, "RGGB "])
def test_unknown_pattern_names_cfa_and_the_accepted_values(bad):
    img, conf = _inputs((16, 16, 3))
    with pytest.raises(ValueError, match=r"cfa: expected a Bayer pattern \(RGGB, BGGR, GRBG, GBRG.*or None"):
        _refine(img, conf, bad, weights=_random_net())


def test_pattern_with_a_grey_image_is_refused():
    img, conf = _inputs((16, 16))
    with pytest.raises(ValueError, match="cfa: .*RGB image, got a grey"):
        _refine(img, conf, "GRBG")
