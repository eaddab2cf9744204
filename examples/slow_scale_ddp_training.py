"""
Distributed training with torch DDP
===================================

Train CRATEEncoder, TorchDenoiser and BlindHarmonizer's flow with torch DistributedDataParallel on 2 CPU processes.

    python examples/slow_scale_ddp_training.py

distributed=2 spawns two processes (gloo backend on CPU; nccl, one GPU each, for a CUDA
device); each takes half of every global mini-batch and DDP averages the gradients, so the
trained network is the single-process one up to float32 rounding, which the script prints.
Processes are only worth it when a batch's forward/backward pass dominates their start-up.

On a real cluster, launch the same script with torchrun on every node
(torchrun --nnodes 2 --nproc-per-node 4 --rdzv-endpoint host:29500 your_script.py), call
torch.distributed.init_process_group("nccl") at its top, and pass distributed="process_group":
every rank calls fit with the same data and parameters and ends with the same network.
"""

import time

import numpy as np

from subspacelab import BlindHarmonizer, CRATEEncoder
from subspacelab.datasets import load_digits
from subspacelab.diffusion import TorchDenoiser


def main():
    X, y = load_digits()  # intensities in [0, 1]
    kw = {"image_shape": (8, 8), "patch_size": 2, "dim": 32, "depth": 2, "heads": 2, "n_epochs": 3,
          "batch_size": 128, "warmup_epochs": 1, "random_state": 0}
    for distributed in (None, 2):
        t0 = time.perf_counter()
        est = CRATEEncoder(distributed=distributed, **kw).fit(X, y)
        print(f"CRATEEncoder distributed={distributed}: losses {np.round(est.loss_curve_, 5)}, "
              f"train accuracy {est.score(X, y):.3f} ({time.perf_counter() - t0:.1f} s)")
    images = X.reshape(-1, 8, 8)
    losses = {}
    for distributed in (None, 2):
        den = TorchDenoiser(base_channels=8, max_steps=30, batch_size=64, distributed=distributed,
                            random_state=0).fit(images)
        losses[distributed] = den.loss_history_
        print(f"TorchDenoiser distributed={distributed}: final loss {den.loss_history_[-1]:.4f}")
    print("largest relative difference of the denoiser losses:",
          float(np.max(np.abs(losses[2] - losses[None]) / losses[None])))
    flow_losses = {}
    for distributed in (None, 2):
        bh = BlindHarmonizer(levels=2, steps_per_level=2, hidden_channels=16, max_steps=20, batch_size=32,
                             distributed=distributed, random_state=0).fit(images)
        flow_losses[distributed] = np.asarray(bh.loss_curve_)
        print(f"BlindHarmonizer distributed={distributed}: final loss {bh.loss_curve_[-1]:.4f} bits/dim")
    print("largest absolute difference of the flow losses (bits/dim):",
          float(np.max(np.abs(flow_losses[2] - flow_losses[None]))))


if __name__ == "__main__":
    main()
