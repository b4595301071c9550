"""The refinement network: a compact residual CNN at half resolution.

Shape contract (kornia style): tensors are ``(B, C, H, W)`` float32, H and W
even. The network maps the fused image and its side information to a
residual that is added to the fused image by the caller
(:func:`mfsr.refine.refine_image`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RefineNet", "N_PIXEL_FEATURES", "N_GLOBAL_FEATURES", "n_globals_of", "widen_globals"]

#: Per-pixel input planes at full resolution: RGB (grey replicated), the
#: normalised confidence and the noise standard-deviation map.
N_PIXEL_FEATURES = 5
#: Per-image constants: CFA flag, grey flag, log2(scale) / 2, confidence
#: level, optical-blur-known flag, optical blur (see
#: :func:`mfsr.refine._features.global_features`).
N_GLOBAL_FEATURES = 6
#: Gain on the fixed detail (high-pass) planes.
DETAIL_GAIN = 4.0
#: Radius of the fixed detail filter, full-resolution pixels.
DETAIL_RADIUS = 2


def _detail_kernel() -> torch.Tensor:
    """5x5 delta minus a normalised Gaussian (sigma 1 px): a high-pass filter."""
    r = DETAIL_RADIUS
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * x**2)
    g2 = g[:, None] * g[None, :]
    k = -g2 / g2.sum()
    k[r, r] += 1.0
    return k


class _PixelChannelAttention(nn.Module):
    """Channel attention whose squeeze is per pixel (two 1x1 convolutions).

    The usual squeeze-and-excitation pools over the whole image, which would
    make a tile's output depend on the tile; the global statistics it would
    capture (noise level, scale, burst depth) are inputs of the network
    instead, so a per-pixel squeeze keeps tiled inference exact and adds no
    receptive field.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(channels, channels // reduction, 1)
        self.excite = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.excite(F.relu(self.squeeze(x))))


class _ResidualBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3 - channel attention, plus the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.attention = _PixelChannelAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.conv2(F.relu(self.conv1(x))))


class RefineNet(nn.Module):
    """Residual refinement CNN working at half resolution.

    The full-resolution inputs are pixel-unshuffled by 2 (each 2x2 block
    becomes 4 channels), so every 3x3 convolution sees a 6x6 full-resolution
    neighbourhood at a quarter of the cost; a final pixel shuffle returns the
    residual to full resolution. One network learns from all modes (grey,
    RGB, CFA-fused RGB): the mode, the scale and the burst's confidence level
    are constant input planes, so every training burst teaches the shared
    filters (one hour of CPU training is too little to train three from
    scratch; a Bayer-only fine-tune is an option of :mod:`mfsr.refine.train`).
    Grey images enter as three equal channels.

    Parameters
    ----------
    channels : int
        Feature channels at half resolution.
    blocks : int
        Number of residual blocks.
    filters : int
        Learned linear filters (0: none). Each is a ``filter_size`` square,
        3-to-3-channel convolution of the fused image with zero DC gain,
        scaled per pixel by a gate the network predicts, and added to the
        residual: a linear deblurring filter (which least squares fits well
        across photographs) that the network only has to switch and weigh.
    filter_size : int
        Side of the learned filters, full-resolution pixels (odd).
    n_globals : int
        How many of the :data:`N_GLOBAL_FEATURES` per-image constants the
        network reads (the first ``n_globals``): 4 for networks trained
        before the optical blur became an input.

    Notes
    -----
    Besides the RGB, confidence and noise planes the network sees fixed
    high-pass "detail" planes of the image (delta minus a 5x5 Gaussian of
    sigma 1 px, times 4; replicate padding). They speed up training: the
    residual is largely a deblurring filter, whose high-frequency gains
    plain gradient descent finds very slowly from the image alone. (A linear
    path from the inputs to the residual would learn faster still, but it
    applies one filter at every scale and noise level and over-sharpens
    scale-1 fusions.)

    Receptive field: ``2 * blocks + 2`` half-resolution convolutions of radius
    1 after the detail filter, i.e. a radius of ``2 * (2 * blocks + 2) + 2``
    full-resolution pixels (:attr:`radius`); the attention adds none. Tiled
    inference needs at least that margin.
    """

    def __init__(self, channels: int = 32, blocks: int = 4, filters: int = 0, filter_size: int = 9,
                 n_globals: int = N_GLOBAL_FEATURES) -> None:
        super().__init__()
        if not 1 <= int(n_globals) <= N_GLOBAL_FEATURES:
            raise ValueError(f"n_globals: expected 1 to {N_GLOBAL_FEATURES}, got {n_globals!r}")
        self.n_globals = int(n_globals)
        self.channels = int(channels)
        self.blocks = int(blocks)
        self.filters = int(filters)
        self.filter_size = int(filter_size)
        if self.filter_size % 2 != 1 or self.filter_size // 2 > self.radius:
            raise ValueError(f"filter_size: expected an odd size within the receptive field, got {filter_size!r}")
        if self.filters:
            # zero filters and unit gates: the path starts switched on but adds nothing
            self.bank = nn.Parameter(torch.zeros(3 * self.filters, 3, self.filter_size, self.filter_size))
            self.gate = nn.Conv2d(channels, 4 * self.filters, 3, padding=1)
            nn.init.zeros_(self.gate.weight)
            nn.init.ones_(self.gate.bias)
        n_in = 4 * (N_PIXEL_FEATURES + 3) + self.n_globals
        # fixed, not learned: a buffer, so it is saved with the weights but never trained
        self.register_buffer("detail", (DETAIL_GAIN * _detail_kernel()).expand(3, 1, -1, -1).clone())
        self.head = nn.Conv2d(n_in, channels, 3, padding=1)
        self.body = nn.Sequential(*[_ResidualBlock(channels) for _ in range(blocks)])
        self.tail = nn.Conv2d(channels, 4 * 3, 3, padding=1)
        # start from the identity (zero residual): fidelity first
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    @property
    def radius(self) -> int:
        """Receptive-field radius in full-resolution pixels."""
        return 2 * (2 * self.blocks + 2) + DETAIL_RADIUS

    def forward(self, pixels: torch.Tensor, globals_: torch.Tensor) -> torch.Tensor:
        """Residual for the fused image.

        Parameters
        ----------
        pixels : Tensor, shape (B, N_PIXEL_FEATURES, H, W)
            Planes 0-2: the fused image, RGB, linear light (grey replicated);
            plane 3: normalised confidence; plane 4: scaled noise sigma. H, W even.
        globals_ : Tensor, shape (B, N_GLOBAL_FEATURES)
            Per-image constants (see :func:`mfsr.refine._features.global_features`);
            the network reads the first :attr:`n_globals`.

        Returns
        -------
        residual : Tensor, shape (B, 3, H, W)
        """
        b, _, h, w = pixels.shape
        if globals_.ndim != 2 or globals_.shape[1] < self.n_globals:
            raise ValueError(f"globals_: expected shape (B, >= {self.n_globals}), got {tuple(globals_.shape)}")
        # Deblurring needs gains at high frequencies, which carry little energy
        # in the image itself: plain gradient descent converges very slowly
        # along them (measured: no gain in 300 steps). Explicit high-pass
        # planes make those directions well conditioned.
        r = DETAIL_RADIUS
        # float32 even under bfloat16 autocast (training): the fine
        # differences this filter extracts would drown in the image's
        # bfloat16 rounding (2**-9 of its level)
        with torch.autocast(pixels.device.type, enabled=False):
            rgb = F.pad(pixels[:, :3].float(), (r, r, r, r), mode="replicate")
            detail = F.conv2d(rgb, self.detail.float(), groups=3)
        g = globals_[:, : self.n_globals, None, None].expand(b, self.n_globals, h // 2, w // 2)
        # one concatenation: unshuffling the parts is unshuffling their concatenation
        x = torch.cat([F.pixel_unshuffle(pixels, 2), F.pixel_unshuffle(detail, 2), g.to(pixels.dtype)], dim=1)
        x = F.relu(self.head(x))
        x = self.body(x)
        residual = F.pixel_shuffle(self.tail(x), 2)
        if self.filters:
            gates = F.pixel_shuffle(self.gate(x), 2)  # (B, filters, H, W)
            r = self.filter_size // 2
            with torch.autocast(pixels.device.type, enabled=False):
                # zero DC gain: the filters only move detail, never the local level
                bank = self.bank.float()
                bank = bank - bank.mean(dim=(2, 3), keepdim=True)
                rgb = F.pad(pixels[:, :3].float(), (r, r, r, r), mode="replicate")
                filtered = F.conv2d(rgb, bank)
                gates = gates.float()
                residual = residual.float().clone()
                for k in range(self.filters):  # in place: no (B, filters, 3, H, W) temporary
                    residual.addcmul_(gates[:, k : k + 1], filtered[:, 3 * k : 3 * k + 3])
        return residual


def n_globals_of(state: dict) -> int:
    """Number of global features a saved ``RefineNet`` state dict reads (from its head's width)."""
    return int(state["head.weight"].shape[1]) - 4 * (N_PIXEL_FEATURES + 3)


def widen_globals(state: dict, n_globals: int = N_GLOBAL_FEATURES) -> dict:
    """A state dict whose head reads ``n_globals`` global features.

    The head's weights for the added features are zero, so the widened
    network computes exactly what the saved one did until training moves
    them (how a network trained before the optical blur became an input is
    fine-tuned to use it).
    """
    w = state["head.weight"]
    extra = n_globals - n_globals_of(state)
    if extra < 0:
        raise ValueError(f"n_globals: the state reads {n_globals_of(state)} global features, cannot narrow to {n_globals}")
    out = dict(state)
    out["head.weight"] = torch.cat([w, w.new_zeros(w.shape[0], extra, *w.shape[2:])], dim=1)
    return out

