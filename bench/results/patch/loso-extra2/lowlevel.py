"""Low-level image statistics of a 256 crop, in torch (convolutions, pooling, means: ONNX-exportable).

Cues the literature reports for generated images that are not semantic: sensor noise (finest Haar band,
Laplacian residual, share of flat 8x8 blocks), the spectral slope (residuals at three scales, NPR-style
up/down-sampling residual), inter-channel residual correlation (camera demosaicing), and colour
(saturation, colourfulness). Each value is a log or a ratio so that it is about scale-free.
"""
import torch
import torch.nn.functional as F

NAMES = ["haar_hh", "lap_abs", "lap_kurt", "npr2", "npr4", "npr8", "slope_2_1", "slope_4_2", "flat8",
         "grad", "grad_kurt", "corr_rg", "corr_gb", "corr_rb", "sat_mean", "sat_std", "colorful",
         "y_std", "hh_ratio_rb", "lap_over_std"]


def _lap(x):
    k = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=x.dtype).view(1, 1, 3, 3)
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k.repeat(c, 1, 1, 1), groups=c)


def _npr(x, s):
    return x - F.interpolate(F.avg_pool2d(x, s), scale_factor=s, mode="nearest")


def _corr(a, b):
    a = a - a.mean(dim=(1, 2), keepdim=True)
    b = b - b.mean(dim=(1, 2), keepdim=True)
    return (a * b).mean(dim=(1, 2)) / (a.pow(2).mean(dim=(1, 2)).sqrt() * b.pow(2).mean(dim=(1, 2)).sqrt() + 1e-6)


def lowlevel(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 255] -> (N, len(NAMES))."""
    eps = 1e-3
    y = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]).unsqueeze(1)
    m = lambda t: t.abs().mean(dim=(1, 2, 3))
    hh = (y[..., 0::2, 0::2] - y[..., 0::2, 1::2] - y[..., 1::2, 0::2] + y[..., 1::2, 1::2]) / 2
    lap = _lap(y)
    n2, n4, n8 = m(_npr(y, 2)), m(_npr(y, 4)), m(_npr(y, 8))
    lap2 = lap.pow(2).mean(dim=(1, 2, 3))
    bstd = (F.avg_pool2d(y * y, 8) - F.avg_pool2d(y, 8).pow(2)).clamp_min(0).sqrt()
    gx, gy = y[..., :, 1:] - y[..., :, :-1], y[..., 1:, :] - y[..., :-1, :]
    g = (gx[..., :-1, :].pow(2) + gy[..., :, :-1].pow(2)).sqrt()
    g2 = g.pow(2).mean(dim=(1, 2, 3))
    lc = _lap(rgb)
    hc = (rgb[..., 0::2, 0::2] - rgb[..., 0::2, 1::2] - rgb[..., 1::2, 0::2] + rgb[..., 1::2, 1::2]) / 2
    hcm = hc.abs().mean(dim=(2, 3))
    mx, mn = rgb.max(dim=1).values, rgb.min(dim=1).values
    sat = (mx - mn) / (mx + 1.0)
    rg, yb = rgb[:, 0] - rgb[:, 1], 0.5 * (rgb[:, 0] + rgb[:, 1]) - rgb[:, 2]
    colorful = (rg.std(dim=(1, 2)).pow(2) + yb.std(dim=(1, 2)).pow(2)).sqrt() + \
        0.3 * (rg.mean(dim=(1, 2)).pow(2) + yb.mean(dim=(1, 2)).pow(2)).sqrt()
    ystd = y.std(dim=(1, 2, 3))
    out = [
        (m(hh) + eps).log(), (m(lap) + eps).log(),
        (lap.pow(4).mean(dim=(1, 2, 3)) + eps).log() - 2 * (lap2 + eps).log(),
        (n2 + eps).log(), (n4 + eps).log(), (n8 + eps).log(),
        (n2 + eps).log() - (m(hh) + eps).log(), (n4 + eps).log() - (n2 + eps).log(),
        (bstd < 2.0).float().mean(dim=(1, 2, 3)),
        (g2 + eps).log(), (g.pow(4).mean(dim=(1, 2, 3)) + eps).log() - 2 * (g2 + eps).log(),
        _corr(lc[:, 0], lc[:, 1]), _corr(lc[:, 1], lc[:, 2]), _corr(lc[:, 0], lc[:, 2]),
        sat.mean(dim=(1, 2)), sat.std(dim=(1, 2)), (colorful + eps).log(), (ystd + eps).log(),
        (hcm[:, 0] + eps).log() - (hcm[:, 2] + eps).log(),
        (lap2.sqrt() + eps).log() - (ystd + eps).log(),
    ]
    return torch.stack(out, dim=1)
