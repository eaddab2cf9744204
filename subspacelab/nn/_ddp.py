"""Data-parallel training with torch DDP for the estimators that train networks.

Two ways to run, chosen by the estimators' ``distributed`` parameter:

* an int ``n``: :func:`spawn` starts ``n`` processes on this machine with
  ``torch.multiprocessing`` (rendezvous through a file in a temporary directory; ``gloo`` on
  CPU, ``nccl`` on CUDA with one GPU per rank) and returns what rank 0 returns;
* ``"process_group"``: the caller already initialised ``torch.distributed`` (``torchrun`` on
  one or several machines, or its own ``init_process_group``); every rank calls ``fit`` with
  the same data and parameters and ends with the same network.

Every rank draws the same global mini-batch from the same seeded generator and takes its
contiguous share (:func:`shard`); its loss is weighted by ``len(share) * world / len(batch)``
so that DDP's gradient average is the gradient of the global batch's mean loss. The training
trajectory is therefore that of the single-process fit, up to the order of floating-point
sums in the gradient all-reduce.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile

import torch
import torch.distributed as dist

__all__ = ["LossModule", "all_reduce_sum", "check_distributed", "shard", "share", "spawn", "wrap"]


def check_distributed(value):
    """Validate an estimator's ``distributed`` parameter.

    Returns None (one process), ``("spawn", n)`` or ``("process_group", None)``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value != "process_group":
            raise ValueError(f"distributed must be None, an int >= 1 or 'process_group', got {value!r}")
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "distributed='process_group' needs an initialised torch.distributed process group "
                "(launch with torchrun, or call torch.distributed.init_process_group first)"
            )
        return ("process_group", None)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"distributed must be None, an int >= 1 or 'process_group', got {value!r}")
    if not dist.is_available():
        raise ValueError("distributed needs torch.distributed, which this torch build lacks")
    return ("spawn", int(value))


def rank_device(device, rank):
    """The device of ``rank``: CUDA ranks get one GPU each, CPU ranks share the CPU."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.device("cuda", rank)
    return dev


def spawn(fn, world_size, args, *, device="cpu", n_threads=None):
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` new processes; return rank 0's result.

    ``fn`` must be importable (a module-level function) and ``args`` picklable; CPU tensors
    in ``args`` reach the ranks in shared memory (torch.multiprocessing), so ``fn`` must copy
    what it modifies (the network it trains). The processes
    join a process group (``nccl`` for a CUDA ``device``, one GPU per rank, else ``gloo``)
    that meets through a file store in a temporary directory: no rank hosts a server that the
    others still need while they tear the group down (with a TCP store on rank 0, a rank that
    was still leaving the group when rank 0 exited aborted in one CI run). ``n_threads`` torch threads per process (default: the CPU count divided by
    the number of processes).
    """
    import torch.multiprocessing as mp

    if torch.device(device).type == "cuda" and world_size > torch.cuda.device_count():
        raise ValueError(f"distributed={world_size} CUDA processes need as many GPUs, found {torch.cuda.device_count()}")
    if n_threads is None:
        n_threads = max(1, (os.cpu_count() or 1) // world_size)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.pt")
        try:
            mp.spawn(
                _entry, args=(world_size, "file://" + os.path.join(tmp, "store"), str(device), n_threads, fn, args,
                              out),
                nprocs=world_size, join=True,
            )
        except mp.ProcessRaisedException as failure:
            # raise the rank's own exception (FloatingPointError, ValueError, ...) in the caller
            saved = _error_path(out, failure.error_index)
            if os.path.exists(saved):
                with open(saved, "rb") as f:
                    raise pickle.loads(f.read()) from failure
            raise
        return torch.load(out, weights_only=False)


def _error_path(out, rank):
    return os.path.join(os.path.dirname(out), f"error{rank}.pickle")


def _entry(rank, world_size, init_method, device, n_threads, fn, args, out):
    torch.set_num_threads(n_threads)
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
    try:
        try:
            result = fn(rank, world_size, *args)
        except Exception as error:
            # an exception that does not pickle is left to spawn's own report (its traceback)
            with contextlib.suppress(Exception):
                data = pickle.dumps(error)
                with open(_error_path(out, rank), "wb") as f:
                    f.write(data)
            raise
        if rank == 0:
            torch.save(result, out)
        # every rank leaves its collectives before any tears the group down: a rank destroying
        # the gloo group while another still talks to it aborted the process ("terminate called
        # without an active exception") in one CI run
        dist.barrier()
    finally:
        dist.destroy_process_group()


def shard(n, rank, world_size):
    """Contiguous share ``[lo, hi)`` of ``n`` batch rows for ``rank`` (sizes differ by at most 1)."""
    return n * rank // world_size, n * (rank + 1) // world_size


def share(n, rank, world_size):
    """This rank's share of a global batch of ``n`` rows: ``(rows, size, weight)``.

    ``rows`` is the slice ``[lo, hi)`` of :func:`shard`, ``size = hi - lo``, and
    ``weight = size * world_size / n`` multiplies the share's mean loss so that DDP's gradient
    average is the gradient of the global batch's mean loss. An empty share (``n < world_size``)
    runs row 0 with weight 0, so that every rank takes part in the gradient all-reduce.
    """
    lo, hi = shard(n, rank, world_size)
    rows = slice(lo, hi) if hi > lo else slice(0, 1)
    return rows, hi - lo, (hi - lo) * world_size / n


class LossModule(torch.nn.Module):
    """``forward(*inputs) = loss_fn(net, *inputs)``: lets DDP see the forward pass of a loss
    that calls other methods of ``net`` than its ``forward`` (e.g. encode/decode)."""

    def __init__(self, net, loss_fn):
        super().__init__()
        self.net = net
        self.loss_fn = loss_fn

    def forward(self, *inputs):
        return self.loss_fn(self.net, *inputs)


def wrap(module, device):
    """``DistributedDataParallel`` around ``module`` (CPU: no device ids)."""
    dev = torch.device(device)
    ids = [dev.index] if dev.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def all_reduce_sum(t):
    """Sum of a CPU float64 tensor over the ranks (gloo and nccl)."""
    backend = dist.get_backend()
    x = t.to(torch.float64)
    if backend == "nccl":
        x = x.cuda()
    dist.all_reduce(x)
    return x.cpu()
