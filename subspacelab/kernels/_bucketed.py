"""Padded, degree-bucketed layout of a CSR pattern for the generic array-API kernels.

The array API standard has ``take`` but no scatter-add or segment-sum, so per-group sums over
a ragged CSR pattern cannot be written directly. The generic kernels instead gather each
group's observations into a dense padded block: groups are bucketed by degree, every group of
a bucket is padded to the bucket's width ``D`` (the next power of two of its degree, so at most
twice its degree), padding slots point at observation 0 and carry a zero mask. Per-group sums
then become batched ``matmul``/``sum`` over the padded axis. Buckets are cut into chunks of at
most ``max_slots`` padded slots, which bounds the working memory of a chunk at
``max_slots * k`` floats; total padded size is at most ``2 |Omega| + n_groups``.

The layout is index bookkeeping only: it is built once on the host from ``indptr`` and moved to
the caller's namespace and device, and reused for every call with the same pattern.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._backend import move_to

__all__ = ["BucketLayout", "bucket_layout"]


@dataclasses.dataclass
class Chunk:
    """Groups ``groups`` (B,), padded observation positions ``pos`` (B*D,), their feature
    indices ``cols`` (B*D,), validity ``mask`` (B, D) bool, and the host degrees (B,)."""

    groups: object
    pos: object
    cols: object
    mask: object
    width: int
    size: int
    degrees: np.ndarray


@dataclasses.dataclass
class BucketLayout:
    """Chunks in output order plus ``inverse`` (n_groups,), mapping a group to its row in the
    concatenation of the chunks' results."""

    chunks: list
    inverse: object
    n_groups: int
    n_obs: int
    split_at: int | None
    xp: object
    device: object


def bucket_layout(indptr, indices, xp, device, *, split_at=None, max_slots=1 << 17):
    """Build the padded layout of the CSR pattern (``indptr``, ``indices``) in ``xp``.

    Parameters
    ----------
    indptr, indices : arrays of any namespace
        CSR pattern (copied to the host to build the index tables).
    xp, device : namespace and device the layout's index arrays are created on.
    split_at : int, optional
        Keep groups of degree ``<= split_at`` and ``> split_at`` in separate chunks (the sketch
        solver treats them differently).
    max_slots : int
        Upper bound on ``B * D`` per chunk (one chunk always holds at least one group).
    """
    from .._backend import to_numpy

    indptr = np.asarray(to_numpy(indptr), dtype=np.int64)
    indices = np.asarray(to_numpy(indices), dtype=np.int64)
    n_groups = indptr.shape[0] - 1
    deg = np.diff(indptr)
    width = np.ones(n_groups, dtype=np.int64)
    nz = deg > 1
    width[nz] = 2 ** np.ceil(np.log2(deg[nz])).astype(np.int64)
    if split_at is not None:
        width = np.where(deg > split_at, np.maximum(width, split_at + 1), np.minimum(width, max(split_at, 1)))
    chunks = []
    order = []
    for w in np.unique(width):
        members = np.flatnonzero(width == w)
        b_max = max(1, max_slots // int(w))
        for lo in range(0, members.size, b_max):
            grp = members[lo : lo + b_max]
            d = deg[grp]
            offs = np.arange(w)[None, :]
            mask = offs < d[:, None]
            pos = np.where(mask, indptr[grp][:, None] + offs, 0)
            cols = indices[pos] if indices.size else np.zeros_like(pos)
            cols = np.where(mask, cols, 0)
            chunks.append(
                Chunk(
                    groups=move_to(grp, xp, device),
                    pos=move_to(pos.reshape(-1), xp, device),
                    cols=move_to(cols.reshape(-1), xp, device),
                    mask=move_to(mask, xp, device),
                    width=int(w),
                    size=int(grp.size),
                    degrees=d,
                )
            )
            order.append(grp)
    order = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    inverse = np.empty(n_groups, dtype=np.int64)
    inverse[order] = np.arange(n_groups)
    return BucketLayout(chunks, move_to(inverse, xp, device), n_groups, int(indices.size), split_at, xp, device)
