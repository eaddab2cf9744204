r"""Pure array-API forward pass of a CRATE network (no torch).

A fitted :class:`~subspacelab.estimators.crate.CRATEEncoder` exports its weights as a dict
``{name: array}`` under the parameter names of :class:`subspacelab.nn.crate.CRATE`; the
functions here evaluate the same network with ``matmul``, LayerNorm, softmax and the
non-negative soft threshold in any array-API namespace (NumPy, CuPy, array_api_strict, torch),
so a fitted model predicts without torch. ``tests/estimators/test_crate.py`` checks them equal to
the torch modules.

Tokens are rows: a batch of token sequences has shape ``(n, N, d)``.
"""

from __future__ import annotations

from ..kernels import soft_threshold

__all__ = ["decode", "encode", "head_logits", "patchify", "pool", "unpatchify"]

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default


def patchify(images, patch_size, xp):
    """``(n, H, W, C)`` images -> ``(n, (H/ph)(W/pw), ph*pw*C)`` patches.

    Patches are listed row by row; the pixels of one patch in the order ``(p1, p2, c)``, as the
    authors' ``Rearrange('b c (h p1) (w p2) -> b (h w) (p1 p2 c)')``.
    """
    n, H, W, C = images.shape
    ph, pw = patch_size
    x = xp.reshape(images, (n, H // ph, ph, W // pw, pw, C))
    x = xp.permute_dims(x, (0, 1, 3, 2, 4, 5))
    return xp.reshape(x, (n, (H // ph) * (W // pw), ph * pw * C))


def unpatchify(patches, image_shape, patch_size, xp):
    """Inverse of :func:`patchify`: ``(n, N, ph*pw*C)`` -> ``(n, H, W, C)``."""
    H, W, C = image_shape
    ph, pw = patch_size
    n = patches.shape[0]
    x = xp.reshape(patches, (n, H // ph, W // pw, ph, pw, C))
    x = xp.permute_dims(x, (0, 1, 3, 2, 4, 5))
    return xp.reshape(x, (n, H, W, C))


def layer_norm(x, params, prefix, xp):
    """LayerNorm over the last axis with the affine parameters ``prefix.weight/bias``."""
    mu = xp.mean(x, axis=-1, keepdims=True)
    xc = x - mu
    var = xp.mean(xc * xc, axis=-1, keepdims=True)
    return xc / xp.sqrt(var + LAYER_NORM_EPS) * params[prefix + ".weight"] + params[prefix + ".bias"]


def _maybe_norm(x, params, prefix, xp):
    return layer_norm(x, params, prefix, xp) if prefix + ".weight" in params else x


def linear(x, params, prefix, xp):
    """``x W^T + b`` as torch.nn.Linear (bias optional)."""
    out = x @ xp.matrix_transpose(params[prefix + ".weight"])
    if prefix + ".bias" in params:
        out = out + params[prefix + ".bias"]
    return out


def softmax(x, xp):
    """Softmax over the last axis with the max-shift (not in the array-API standard)."""
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def head_projections(z, params, prefix, config, xp):
    """Per-head projected tokens ``(n, K, N, p)`` of the MSSA input ``z`` (the LayerNormed tokens
    in code mode): the ``qkv`` output split by head, or :math:`Z U_k` in paper mode."""
    K, p = config["heads"], config["dim_head"]
    if config["mode"] == "code":
        w = z @ xp.matrix_transpose(params[prefix + ".qkv.weight"])  # (n, N, K p)
        n, N = w.shape[0], w.shape[1]
        return xp.permute_dims(xp.reshape(w, (n, N, K, p)), (0, 2, 1, 3))
    return xp.expand_dims(z, axis=1) @ params[prefix + ".bases"]  # (n, 1, N, d) @ (K, d, p)


def attention(w, config, xp):
    """Attention matrices ``(n, K, N, N)``; rows are distributions over the keys."""
    gram = w @ xp.matrix_transpose(w)
    if config["mode"] == "code":
        return softmax(gram * config["dim_head"] ** -0.5, xp)
    if config.get("attention", "softmax") == "linear":
        return gram
    return softmax(gram, xp)


def mssa(z, params, prefix, config, xp, record=None):
    """Multi-head subspace self-attention of tokens ``z``; returns ``(n, N, d)``.

    Code mode: ``to_out(concat_k A_k W_k)``. Paper mode: :math:`\\beta \\sum_k A_k (Z U_k)
    U_k^\\top` with :math:`\\beta = p/(N\\varepsilon^2)`.
    """
    w = head_projections(z, params, prefix, config, xp)
    a = attention(w, config, xp)
    if record is not None:
        record["projections"].append(w)
        record["attention"].append(a)
    out = a @ w  # (n, K, N, p)
    if config["mode"] == "code":
        n, K, N, p = out.shape
        out = xp.reshape(xp.permute_dims(out, (0, 2, 1, 3)), (n, N, K * p))
        if prefix + ".to_out.weight" in params:
            out = linear(out, params, prefix + ".to_out", xp)
        return out
    beta = config["dim_head"] / (z.shape[-2] * config["eps_sq"])
    return beta * xp.sum(out @ xp.matrix_transpose(params[prefix + ".bases"]), axis=1)


def ista(z, weight, config, xp):
    """One non-negative ISTA step: :math:`S^+_{\\eta\\lambda}(z + \\eta(zD - zD^\\top D))`."""
    eta, lam = config["ista_step"], config["ista_lambda"]
    u = z + eta * (z @ weight - (z @ xp.matrix_transpose(weight)) @ weight)
    return soft_threshold(u, eta * lam, nonnegative=True)


def embed(units, params, config, xp, *, mask=None):
    """Tokens ``Z^0`` ``(n, N+1, d)``: embedded patches (masked ones replaced by the mask
    token), the class token first, plus the positional embedding."""
    x = _maybe_norm(units, params, "embed.input_norm", xp)
    x = linear(x, params, "embed.proj", xp)
    x = _maybe_norm(x, params, "embed.output_norm", xp)
    if mask is not None:
        m = xp.expand_dims(xp.astype(mask, x.dtype), axis=-1)
        x = (1 - m) * x + m * params["mask_token"]
    n = x.shape[0]
    cls = xp.broadcast_to(params["cls_token"], (n, 1, x.shape[-1]))
    x = xp.concat([cls, x], axis=1)
    if "pos_embedding" in params:
        x = x + params["pos_embedding"]
    return x


def layer(z, params, i, config, xp, record=None):
    """One CRATE layer: compression (MSSA) then sparsification (ISTA)."""
    prefix = f"layers.{i}"
    if config["mode"] == "code":
        half = z + mssa(layer_norm(z, params, prefix + ".norm1", xp), params, prefix + ".mssa", config, xp, record)
        u = layer_norm(half, params, prefix + ".norm2", xp)
    else:
        N = z.shape[-2]
        kb = config["compression_step"] * config["dim_head"] / (N * config["eps_sq"])
        half = (1 - kb) * z + kb * mssa(z, params, prefix + ".mssa", config, xp, record)
        u = half
    out = ista(u, params[prefix + ".ista.weight"], config, xp)
    if record is not None:
        record["half"].append(half)
        record["tokens"].append(out)
    return out


def encode(units, params, config, xp, *, mask=None, record=None):
    """Run the encoder; returns the list ``[Z^0, ..., Z^L]`` of token arrays."""
    z = embed(units, params, config, xp, mask=mask)
    out = [z]
    if record is not None:
        record.setdefault("projections", [])
        record.setdefault("attention", [])
        record.setdefault("half", [])
        record.setdefault("tokens", [z])
    for i in range(config["depth"]):
        z = layer(z, params, i, config, xp, record)
        out.append(z)
    return out


def pool(z, config, xp):
    """Class token (``pool='cls'``) or mean token of ``(n, N+1, d)`` tokens."""
    if config["pool"] == "cls":
        return z[:, 0, :]
    return xp.mean(z, axis=1)


def head_logits(feature, params, xp):
    """Classification head: (LayerNorm in code mode) then Linear."""
    return linear(_maybe_norm(feature, params, "head.norm", xp), params, "head.linear", xp)


def decode(z, params, config, xp):
    """Decoder: tokens ``(n, N+1, d)`` -> predicted units ``(n, N, unit_dim)``.

    Each decoder layer inverts an encoder layer in reverse order: the dictionary is applied
    (:math:`Z D^\\top`, undoing the sparse coding) and then a compression step is undone
    (code: ``x - MSSA(LN(x))``; paper: :math:`(1+\\kappa\\beta)Z - \\kappa\\beta\\,\\mathrm{MSSA}(Z)`,
    a gradient ascent step on :math:`R^c`), as in the authors' ``crate_ae`` decoder.
    """
    for i in range(config["decoder_depth"]):
        prefix = f"decoder.{i}"
        u = _maybe_norm(z, params, prefix + ".norm1", xp)
        h = u @ xp.matrix_transpose(params[prefix + ".dictionary"])
        if config["mode"] == "code":
            z = h - mssa(layer_norm(h, params, prefix + ".norm2", xp), params, prefix + ".mssa", config, xp)
        else:
            N = h.shape[-2]
            kb = config["compression_step"] * config["dim_head"] / (N * config["eps_sq"])
            z = (1 + kb) * h - kb * mssa(h, params, prefix + ".mssa", config, xp)
    z = _maybe_norm(z, params, "decoder_head.norm", xp)
    return linear(z, params, "decoder_head.linear", xp)[:, 1:, :]

