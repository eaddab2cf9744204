r"""Array-API pieces of the normalizing flows: the rational-quadratic spline, the Sobel operator,
and a forward/inverse pass of a whole exported flow (NumPy, CuPy, torch, array_api_strict).

Nothing here imports torch. The torch modules of :mod:`subspacelab.nn.flows` call
:func:`rational_quadratic_spline` with ``array_api_compat.torch`` (so training differentiates
the very same code), and :func:`flow_forward` / :func:`flow_inverse` evaluate a flow exported
with :meth:`subspacelab.nn.flows.Glow.export` in any namespace: the 3 x 3 convolutions of the
conditioners are written as nine shifted channel matmuls (spec diffusion_flow.md §4.6 (a)).

Spline (Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019): on
:math:`[-B, B]` the map is monotone rational-quadratic on :math:`K` bins with knots
:math:`(x^k, y^k)` and derivatives :math:`\delta^k` (:math:`\delta^0 = \delta^K = 1`); outside
it is the identity ("linear tails"). With :math:`\xi = (x - x^k)/w^k` and :math:`s^k = h^k/w^k`,

.. math::

    g(x) = y^k + \frac{h^k\,[s^k\xi^2 + \delta^k\xi(1-\xi)]}
                      {s^k + (\delta^{k+1} + \delta^k - 2s^k)\,\xi(1-\xi)},\qquad
    g'(x) = \frac{(s^k)^2\,[\delta^{k+1}\xi^2 + 2s^k\xi(1-\xi) + \delta^k(1-\xi)^2]}
                 {[s^k + (\delta^{k+1} + \delta^k - 2s^k)\,\xi(1-\xi)]^2} > 0,

and the inverse solves the quadratic :math:`a\xi^2 + b\xi + c = 0` in its stable form
:math:`\xi = 2c / (-b - \sqrt{b^2 - 4ac})`.
"""

from __future__ import annotations

import math

__all__ = [
    "flow_forward",
    "flow_inverse",
    "rational_quadratic_spline",
    "sobel",
    "sobel_adjoint",
]


def _softmax(a, xp):
    a = a - xp.max(a, axis=-1, keepdims=True)
    e = xp.exp(a)
    return e / xp.sum(e, axis=-1, keepdims=True)


def _softplus(a, xp):
    return xp.log1p(xp.exp(-xp.abs(a))) + xp.maximum(a, xp.zeros_like(a))


def _knots(unnormalized, tail_bound, min_size, xp):
    """Bin sizes (…, K) and knot positions (…, K+1) from unnormalised logits, on [-B, B]."""
    K = unnormalized.shape[-1]
    sizes = min_size + (1.0 - min_size * K) * _softmax(unnormalized, xp)
    cum = xp.cumulative_sum(sizes, axis=-1, include_initial=True)
    knots = 2.0 * tail_bound * cum - tail_bound
    # pin the end knots exactly to -B and B (the cumulative sum may miss 1 by rounding)
    lo = xp.full_like(knots[..., :1], -tail_bound)
    hi = xp.full_like(knots[..., :1], tail_bound)
    knots = xp.concat((lo, knots[..., 1:-1], hi), axis=-1)
    return knots[..., 1:] - knots[..., :-1], knots


def _gather(values, onehot, xp):
    return xp.sum(values * onehot, axis=-1)


def rational_quadratic_spline(x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives, *,
                              inverse=False, tail_bound=3.0, min_bin_width=1e-3, min_bin_height=1e-3,
                              min_derivative=1e-3, xp=None):
    r"""Elementwise monotone rational-quadratic spline with linear (identity) tails.

    Parameters
    ----------
    x : array of shape S
        Inputs (outputs of the spline when ``inverse``).
    unnormalized_widths, unnormalized_heights : arrays of shape (*S, K)
        Bin logits; the softmax gives bin widths/heights of at least ``min_bin_width``/``height``.
    unnormalized_derivatives : array of shape (*S, K - 1)
        Interior knot derivatives through ``min_derivative + softplus``; the two end knots have
        derivative 1 so the spline joins the identity tails with a continuous slope.
    inverse : bool
    tail_bound : float
        :math:`B`.
    xp : namespace, optional
        Default: the namespace of ``x``.

    Returns
    -------
    out : array of shape S
    logabsdet : array of shape S
        :math:`\log g'(x)` (forward) or :math:`-\log g'(g^{-1}(y))` (inverse), 0 on the tails.
    """
    if xp is None:
        import array_api_compat

        xp = array_api_compat.array_namespace(x)
    K = unnormalized_widths.shape[-1]
    if min_bin_width * K > 1.0 or min_bin_height * K > 1.0:
        raise ValueError(f"min_bin_width and min_bin_height must be at most 1/num_bins = {1.0 / K}")
    inside = (x >= -tail_bound) & (x <= tail_bound)
    xin = xp.where(inside, x, xp.zeros_like(x))
    widths, cumwidths = _knots(unnormalized_widths, tail_bound, min_bin_width, xp)
    heights, cumheights = _knots(unnormalized_heights, tail_bound, min_bin_height, xp)
    one = math.log(math.expm1(1.0 - min_derivative))  # softplus(one) + min_derivative = 1
    pad = xp.full_like(unnormalized_derivatives[..., :1], one)
    derivs = min_derivative + _softplus(xp.concat((pad, unnormalized_derivatives, pad), axis=-1), xp)
    # bin index: number of interior knots at or below the point (a portable searchsorted)
    edges = cumheights if inverse else cumwidths
    idx = xp.sum(xp.astype(xin[..., None] >= edges[..., 1:-1], xp.int64), axis=-1)
    onehot = xp.astype(idx[..., None] == xp.arange(K, device=_device(x)), x.dtype)
    x_k, w_k = _gather(cumwidths[..., :-1], onehot, xp), _gather(widths, onehot, xp)
    y_k, h_k = _gather(cumheights[..., :-1], onehot, xp), _gather(heights, onehot, xp)
    d_k, d_k1 = _gather(derivs[..., :-1], onehot, xp), _gather(derivs[..., 1:], onehot, xp)
    s_k = h_k / w_k
    if inverse:
        dy = xin - y_k
        t = d_k1 + d_k - 2.0 * s_k
        a = h_k * (s_k - d_k) + dy * t
        b = h_k * d_k - dy * t
        c = -s_k * dy
        disc = xp.maximum(b * b - 4.0 * a * c, xp.zeros_like(b))
        xi = (2.0 * c) / (-b - xp.sqrt(disc))
        out = xi * w_k + x_k
    else:
        xi = (xin - x_k) / w_k
    xi1 = xi * (1.0 - xi)
    den = s_k + (d_k1 + d_k - 2.0 * s_k) * xi1
    deriv = s_k * s_k * (d_k1 * xi * xi + 2.0 * s_k * xi1 + d_k * (1.0 - xi) ** 2) / (den * den)
    logdet = xp.log(deriv)
    if not inverse:
        out = y_k + h_k * (s_k * xi * xi + d_k * xi1) / den
    else:
        logdet = -logdet
    out = xp.where(inside, out, x)
    logdet = xp.where(inside, logdet, xp.zeros_like(logdet))
    return out, logdet


def _device(x):
    import array_api_compat

    return array_api_compat.device(x)


# ------------------------------------------------------------------------------------- Sobel

# cv2/scikit-image orientation: d/du along the last axis (columns), d/dv along rows.
_SOBEL_U = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
_SOBEL_V = ((-1.0, -2.0, -1.0), (0.0, 0.0, 0.0), (1.0, 2.0, 1.0))


def _pad1(img, xp):
    """Zero-pad the last two axes by one pixel (concat, so it runs in every namespace)."""
    zr = xp.zeros((*img.shape[:-2], 1, img.shape[-1]), dtype=img.dtype, device=_device(img))
    img = xp.concat((zr, img, zr), axis=-2)
    zc = xp.zeros((*img.shape[:-1], 1), dtype=img.dtype, device=_device(img))
    return xp.concat((zc, img, zc), axis=-1)


def _correlate3(img, kernel, xp):
    H, W = img.shape[-2], img.shape[-1]
    p = _pad1(img, xp)
    out = xp.zeros_like(img)
    for i in range(3):
        for j in range(3):
            if kernel[i][j] != 0.0:
                out = out + kernel[i][j] * p[..., i:i + H, j:j + W]
    return out


def sobel(img, xp=None):
    r"""Sobel derivatives ``(d/du, d/dv)`` of images ``(..., H, W)`` with zero padding.

    Correlation with :math:`S_u = [[-1,0,1],[-2,0,2],[-1,0,1]]` and :math:`S_v = S_u^\top`.
    Zero padding makes the adjoint exact: :func:`sobel_adjoint` is correlation with the flipped
    kernel, which for Sobel is the negated kernel.
    """
    xp = xp if xp is not None else _ns(img)
    return _correlate3(img, _SOBEL_U, xp), _correlate3(img, _SOBEL_V, xp)


def sobel_adjoint(gu, gv, xp=None):
    r""":math:`S_u^\top g_u + S_v^\top g_v` (the adjoint of :func:`sobel` summed over both directions)."""
    xp = xp if xp is not None else _ns(gu)
    return -(_correlate3(gu, _SOBEL_U, xp) + _correlate3(gv, _SOBEL_V, xp))


def _ns(x):
    import array_api_compat

    return array_api_compat.array_namespace(x)


# ------------------------------------------------------------- exported flow, any namespace

def _conv1x1(x, weight, bias, xp):
    """x (B, C, H, W), weight (O, C) -> (B, O, H, W)."""
    B, C, H, W = x.shape
    flat = xp.reshape(xp.permute_dims(x, (0, 2, 3, 1)), (B * H * W, C))
    out = flat @ xp.matrix_transpose(weight)
    if bias is not None:
        out = out + bias
    return xp.permute_dims(xp.reshape(out, (B, H, W, weight.shape[0])), (0, 3, 1, 2))


def _conv3x3(x, weight, bias, xp):
    """x (B, C, H, W), weight (O, C, 3, 3), zero padding 1 -> (B, O, H, W) (torch's conv2d).

    im2col: the nine shifted copies of the padded input are stacked along the channels
    (shift-major) and contracted with the weight reordered to (O, 9C) in one matmul.
    """
    H, W = x.shape[-2], x.shape[-1]
    O, C = weight.shape[0], weight.shape[1]
    p = _pad1(x, xp)
    cols = xp.concat([p[..., i:i + H, j:j + W] for i in range(3) for j in range(3)], axis=1)
    w = xp.reshape(xp.permute_dims(weight, (0, 2, 3, 1)), (O, 9 * C))
    return _conv1x1(cols, w, bias, xp)


def _relu(x, xp):
    return xp.maximum(x, xp.zeros_like(x))


def _conditioner(x, p, xp):
    h = _conv3x3(x, p["in.weight"], p["in.bias"], xp)
    for b in range(p["n_blocks"]):
        r = _conv3x3(_relu(h, xp), p[f"blocks.{b}.0.weight"], p[f"blocks.{b}.0.bias"], xp)
        r = _conv3x3(_relu(r, xp), p[f"blocks.{b}.1.weight"], p[f"blocks.{b}.1.bias"], xp)
        h = h + r
    return _conv3x3(_relu(h, xp), p["out.weight"], p["out.bias"], xp)


def _squeeze(x, xp):
    B, C, H, W = x.shape
    x = xp.reshape(x, (B, C, H // 2, 2, W // 2, 2))
    return xp.reshape(xp.permute_dims(x, (0, 1, 3, 5, 2, 4)), (B, 4 * C, H // 2, W // 2))


def _unsqueeze(x, xp):
    B, C, H, W = x.shape
    x = xp.reshape(x, (B, C // 4, 2, 2, H, W))
    return xp.reshape(xp.permute_dims(x, (0, 1, 4, 2, 5, 3)), (B, C // 4, 2 * H, 2 * W))


def _coupling_params(h, C2, kind, xp):
    B, _, H, W = h.shape
    if kind == "affine":
        return h[:, :C2, ...], h[:, C2:, ...]
    K3 = h.shape[1] // C2
    h = xp.permute_dims(xp.reshape(h, (B, C2, K3, H, W)), (0, 1, 3, 4, 2))
    return h


def _coupling(x, p, xp, inverse):
    C = x.shape[1]
    C1 = C // 2
    xa, xb = x[:, :C1, ...], x[:, C1:, ...]
    h = _conditioner(xa, p, xp)
    if p["kind"] == "affine":
        shift, raw = h[:, :C - C1, ...], h[:, C - C1:, ...]
        scale = 0.5 * (1.0 + xp.tanh(0.5 * (raw + 2.0))) + 1e-3  # sigmoid(raw + 2), overflow-free
        yb = (xb - shift) / scale if inverse else xb * scale + shift
        ld = xp.sum(xp.log(scale), axis=(1, 2, 3))
        ld = -ld if inverse else ld
    else:
        K = p["num_bins"]
        params = _coupling_params(h, C - C1, "spline", xp)
        yb, ld_el = rational_quadratic_spline(
            xb, params[..., :K], params[..., K:2 * K], params[..., 2 * K:], inverse=inverse,
            tail_bound=p["tail_bound"], xp=xp)
        ld = xp.sum(ld_el, axis=(1, 2, 3))
    return xp.concat((xa, yb), axis=1), ld


def _step(x, p, xp, inverse):
    H, W = x.shape[-2], x.shape[-1]
    an_b = xp.reshape(p["actnorm.bias"], (1, -1, 1, 1))
    an_s = p["actnorm.log_scale"]
    w = p["invconv.weight"]
    if not inverse:
        x = (x + an_b) * xp.exp(xp.reshape(an_s, (1, -1, 1, 1)))
        ld = H * W * xp.sum(an_s) + H * W * p["invconv.logdet"]
        x = _conv1x1(x, w, None, xp)
        x, ldc = _coupling(x, p["coupling"], xp, False)
        return x, ld + ldc
    x, ldc = _coupling(x, p["coupling"], xp, True)
    x = _conv1x1(x, p["invconv.inverse"], None, xp)
    x = x * xp.exp(-xp.reshape(an_s, (1, -1, 1, 1))) - an_b
    return x, ldc - H * W * xp.sum(an_s) - H * W * p["invconv.logdet"]


def _asarrays(exported, xp, device, dtype):
    def conv(v):
        if isinstance(v, dict):
            return {k: conv(u) for k, u in v.items()}
        if isinstance(v, list):
            return [conv(u) for u in v]
        if hasattr(v, "shape"):
            from .._backend import move_to

            return xp.astype(move_to(v, xp, device), dtype)
        return v

    return conv(exported)


def flow_forward(x, exported, xp=None):
    r"""Latent ``z`` (B, D) and :math:`\log|\det \partial z/\partial x|` (B,) of images ``x`` (B, C, H, W).

    ``exported`` comes from :meth:`subspacelab.nn.flows.Glow.export` (NumPy weights; they are
    moved into ``x``'s namespace and dtype here).
    """
    xp = xp if xp is not None else _ns(x)
    ex = _asarrays(exported, xp, _device(x), x.dtype)
    B = x.shape[0]
    parts, logdet = [], xp.zeros((B,), dtype=x.dtype, device=_device(x))
    for li, level in enumerate(ex["levels"]):
        if level["squeeze"]:
            x = _squeeze(x, xp)
        for step in level["steps"]:
            x, ld = _step(x, step, xp, False)
            logdet = logdet + ld
        if li < len(ex["levels"]) - 1:
            half = x.shape[1] // 2
            parts.append(xp.reshape(x[:, :half, ...], (B, -1)))
            x = x[:, half:, ...]
    parts.append(xp.reshape(x, (B, -1)))
    return xp.concat(parts, axis=1), logdet


def flow_inverse(z, exported, xp=None):
    """Images (B, C, H, W) from latents ``z`` (B, D): the inverse of :func:`flow_forward`."""
    xp = xp if xp is not None else _ns(z)
    ex = _asarrays(exported, xp, _device(z), z.dtype)
    B = z.shape[0]
    shapes = ex["latent_shapes"]
    sizes = [math.prod(s) for s in shapes]
    offs = [0]
    for s in sizes:
        offs.append(offs[-1] + s)
    x = xp.reshape(z[:, offs[-2]:offs[-1]], (B, *shapes[-1]))
    n_levels = len(ex["levels"])
    for li in range(n_levels - 1, -1, -1):
        level = ex["levels"][li]
        if li < n_levels - 1:
            part = xp.reshape(z[:, offs[li]:offs[li + 1]], (B, *shapes[li]))
            x = xp.concat((part, x), axis=1)
        for step in reversed(level["steps"]):
            x, _ = _step(x, step, xp, True)
        if level["squeeze"]:
            x = _unsqueeze(x, xp)
    return x
