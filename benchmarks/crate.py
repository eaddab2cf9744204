"""CRATE benchmark: CRATEEncoder against an equal-budget ViT, an MLP and logistic regression.

Datasets: scikit-learn's digits (8x8, patch 2) and the MNIST 5k subset (28x28, patch 7), each
with one fixed stratified 70/30 split. For every dataset the script prints, inside one JSON
object,

* per model (``CRATEEncoder`` in mode "code", ``ViT``, ``MLPClassifier``, ``LogisticRegression``):
  ``test_accuracy`` (mean over the seeds), ``test_accuracy_per_seed``, ``n_parameters``,
  ``train_seconds`` (mean);
* for CRATEEncoder: per-layer ``compression`` and ``sparsity`` on the test set ``before`` (random
  initialisation, same seed) and ``after`` training, and whether compression decreases and
  sparsity increases with depth;
* masked autoencoding (``CRATEEncoder.fit(X)`` without labels, ``MAE_CONFIG``): on the held-out
  images with half of the patches hidden, the ``reconstruction_mse`` on the hidden pixels against
  the ``mean_image_mse`` of the training mean image on the same pixels, the same on the visible
  pixels (``visible_*``), and for the unmasked reconstruction
  ``inverse_transform(transform(X))`` (``full_*``);

then a markdown table. The ViT is a standard pre-norm ViT written here (vit-pytorch's layout:
LN -> Linear -> LN patch embedding, class token, learned positional embedding, pre-norm
attention with separate q, k, v and an MLP of width 2*dim with GELU: 135 k parameters at
dim 64, depth 4, as the issue's measured ViT), trained by the same loop,
optimiser, schedule, epochs and batch size as CRATE, without augmentation for either. torch
runs single-threaded (the machine is shared; ratios are what to quote).

    python benchmarks/crate.py [--quick] [--json-out FILE] [--md-out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from torch import nn

from subspacelab import CRATEEncoder
from subspacelab.datasets import DataNotAvailableError, load_digits, load_mnist_5k
from subspacelab.estimators._crate_forward import patchify, unpatchify

from _report import write_outputs


class ViT(nn.Module):
    """Standard pre-norm ViT classifier on pre-cut patches ``(n, N, patch_dim)``."""

    def __init__(self, patch_dim, n_patches, n_classes, *, dim, depth, heads, mlp_ratio=2, pool="cls"):
        super().__init__()
        self.heads, self.pool = heads, pool
        self.embed = nn.Sequential(nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.LayerNorm(dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, n_patches + 1, dim))
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(nn.ModuleDict(dict(
                norm1=nn.LayerNorm(dim), qkv=nn.Linear(dim, 3 * dim, bias=False), out=nn.Linear(dim, dim),
                norm2=nn.LayerNorm(dim),
                mlp=nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)))))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, n_classes))

    def forward(self, x):
        x = self.embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], 1, -1), x], dim=1) + self.pos_embedding
        n, N, d = x.shape
        for b in self.blocks:
            q, k, v = b["qkv"](b["norm1"](x)).reshape(n, N, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5, dim=-1)
            x = x + b["out"]((att @ v).permute(0, 2, 1, 3).reshape(n, N, d))
            x = x + b["mlp"](b["norm2"](x))
        return self.head(x[:, 0] if self.pool == "cls" else x.mean(dim=1))


def train_vit(Xtr_units, ytr, n_classes, cfg, seed):
    """The same loop as CRATEEncoder.fit: AdamW, per-step linear warm-up then cosine, label smoothing."""
    torch.manual_seed(seed)
    model = ViT(Xtr_units.shape[2], Xtr_units.shape[1], n_classes, dim=cfg["dim"], depth=cfg["depth"],
                heads=cfg["heads"], pool=cfg.get("pool", "cls"))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=(0.9, 0.999))
    steps = math.ceil(len(ytr) / cfg["batch_size"])
    total, warm = cfg["n_epochs"] * steps, cfg["warmup_epochs"] * steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    X = torch.as_tensor(Xtr_units, dtype=torch.float32)
    y = torch.as_tensor(ytr, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(cfg["n_epochs"]):
        model.train()
        for idx in torch.randperm(len(y), generator=gen).split(cfg["batch_size"]):
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx], label_smoothing=cfg["label_smoothing"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def n_params(module):
    return int(sum(p.numel() for p in module.parameters()))


def load(name, quick):
    if name == "digits":
        X, y = load_digits(return_images=True)
        shape, patch = (8, 8), 2
    else:
        X, y = load_mnist_5k(return_images=True)
        shape, patch = (28, 28), 7
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    if quick:
        Xtr, _, ytr, _ = train_test_split(Xtr, ytr, train_size=500, stratify=ytr, random_state=0)
        Xte, _, yte, _ = train_test_split(Xte, yte, train_size=300, stratify=yte, random_state=0)
    return Xtr, Xte, ytr, yte, shape, patch


def classify(Xtr, Xte, ytr, yte, shape, patch, cfg, seeds, quick, crate_kw):
    models = {}

    acc, secs, whitebox = [], [], None
    for seed in seeds:
        t0 = time.perf_counter()
        est = CRATEEncoder(random_state=seed, **crate_kw).fit(Xtr, ytr)
        secs.append(time.perf_counter() - t0)
        acc.append(float(est.score(Xte, yte)))
        if whitebox is None:
            init = CRATEEncoder(random_state=seed, **{**crate_kw, "n_epochs": 0}).fit(Xtr, ytr)
            comp_b, comp_a = init.layerwise_compression(Xte), est.layerwise_compression(Xte)
            spars_b, spars_a = init.layerwise_sparsity(Xte), est.layerwise_sparsity(Xte)
            whitebox = {
                "compression": {"before": comp_b.tolist(), "after": comp_a.tolist()},
                "sparsity": {"before": spars_b.tolist(), "after": spars_a.tolist()},
                "sparse_rate_reduction_after": est.layerwise_sparse_rate_reduction(Xte).tolist(),
                "compression_decreases_with_depth": bool(np.all(np.diff(comp_a) < 0)),
                "sparsity_increases_with_depth": bool(np.all(np.diff(spars_a) > 0)),
            }
            n_crate = n_params(est.module_)
    models["CRATEEncoder"] = {"test_accuracy": float(np.mean(acc)), "test_accuracy_per_seed": acc,
                              "n_parameters": n_crate, "train_seconds": float(np.mean(secs)), **whitebox}

    units_tr = patchify(Xtr.reshape(len(Xtr), *shape, 1), (patch, patch), np)
    units_te = torch.as_tensor(patchify(Xte.reshape(len(Xte), *shape, 1), (patch, patch), np), dtype=torch.float32)
    acc, secs = [], []
    for seed in seeds:
        t0 = time.perf_counter()
        vit = train_vit(units_tr, ytr, 10, cfg, seed)
        secs.append(time.perf_counter() - t0)
        with torch.no_grad():
            acc.append(float((vit(units_te).argmax(1).numpy() == yte).mean()))
    models["ViT"] = {"test_accuracy": float(np.mean(acc)), "test_accuracy_per_seed": acc, "n_parameters": n_params(vit),
                     "train_seconds": float(np.mean(secs))}

    flat_tr, flat_te = Xtr.reshape(len(Xtr), -1), Xte.reshape(len(Xte), -1)
    acc, secs = [], []
    for seed in seeds:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp = MLPClassifier(max_iter=200 if not quick else 30, random_state=seed).fit(flat_tr, ytr)
        secs.append(time.perf_counter() - t0)
        acc.append(float(mlp.score(flat_te, yte)))
    models["MLPClassifier"] = {"test_accuracy": float(np.mean(acc)), "test_accuracy_per_seed": acc,
                               "n_parameters": int(sum(w.size for w in mlp.coefs_ + mlp.intercepts_)),
                               "train_seconds": float(np.mean(secs))}
    t0 = time.perf_counter()
    lr = LogisticRegression(max_iter=200 if quick else 2000).fit(flat_tr, ytr)
    models["LogisticRegression"] = {"test_accuracy": float(lr.score(flat_te, yte)),
                                    "test_accuracy_per_seed": [float(lr.score(flat_te, yte))],
                                    "n_parameters": int(lr.coef_.size + lr.intercept_.size),
                                    "train_seconds": time.perf_counter() - t0}
    out = {"models": models}
    out["crate_vs_vit"] = {
        "accuracy_gap_points": 100 * (models["ViT"]["test_accuracy"] - models["CRATEEncoder"]["test_accuracy"]),
        "parameter_ratio": models["CRATEEncoder"]["n_parameters"] / models["ViT"]["n_parameters"],
        "train_time_ratio": models["CRATEEncoder"]["train_seconds"] / models["ViT"]["train_seconds"],
    }

    return out


def run_dataset(name, cfg, seeds, quick, sections=("classify", "mae")):
    Xtr, Xte, ytr, yte, shape, patch = load(name, quick)
    crate_kw = dict(image_shape=shape, patch_size=patch, dim=cfg["dim"], depth=cfg["depth"], heads=cfg["heads"],
                    mode="code", optimizer="adamw", lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                    n_epochs=cfg["n_epochs"], batch_size=cfg["batch_size"], warmup_epochs=cfg["warmup_epochs"],
                    label_smoothing=cfg["label_smoothing"])
    out = {"n_train": int(len(ytr)), "n_test": int(len(yte)), "image_shape": list(shape), "patch_size": patch}
    if "classify" in sections:
        out.update(classify(Xtr, Xte, ytr, yte, shape, patch, cfg, seeds, quick, crate_kw))
    if "mae" not in sections:
        return out
    # masked autoencoding without labels
    t0 = time.perf_counter()
    mae_kw = {**crate_kw, "label_smoothing": 0.0, "lr": MAE_CONFIG["lr"], "n_epochs": MAE_CONFIG["n_epochs"] if not quick else 1,
              "warmup_epochs": MAE_CONFIG["warmup_epochs"] if not quick else 1}
    mae = CRATEEncoder(random_state=seeds[0], mask_ratio=MAE_CONFIG["mask_ratio"], **mae_kw).fit(Xtr)
    mae_secs = time.perf_counter() - t0
    n_units = (shape[0] // patch) * (shape[1] // patch)
    rng = np.random.default_rng(123)
    mask = np.argsort(np.argsort(rng.random((len(Xte), n_units)), axis=1), axis=1) < n_units // 2
    # hidden pixels: the patch mask unpatchified to image shape
    pix = unpatchify(np.repeat(mask[:, :, None], patch * patch, axis=2).astype(float), (*shape, 1), (patch, patch),
                     np).reshape(len(Xte), *shape) > 0
    mean_img = Xtr.mean(axis=0)
    rec_masked = mae.reconstruct(Xte, patch_mask=mask)
    rec_full = mae.inverse_transform(mae.transform(Xte, return_tokens=True))
    err_mean = (Xte - mean_img) ** 2
    out["masked_autoencoding"] = {
        "mask_ratio": MAE_CONFIG["mask_ratio"],
        "n_epochs": mae_kw["n_epochs"],
        "lr": mae_kw["lr"],
        "train_seconds": mae_secs,
        "reconstruction_mse": float(((rec_masked - Xte) ** 2)[pix].mean()),
        "mean_image_mse": float(err_mean[pix].mean()),
        "visible_reconstruction_mse": float(((rec_masked - Xte) ** 2)[~pix].mean()),
        "visible_mean_image_mse": float(err_mean[~pix].mean()),
        "full_reconstruction_mse": float(((rec_full - Xte) ** 2).mean()),
        "full_mean_image_mse": float(err_mean.mean()),
        "final_train_loss": mae.loss_curve_[-1],
    }
    return out


# Masked autoencoding: more steps and a larger learning rate than the classifiers (chosen on a
# validation split of the digits training images, never the test split: at 25 epochs and lr 1e-3
# the masked patches stay at the mean-image error; 100 epochs at lr 3e-3 brings them 38 % below).
MAE_CONFIG = dict(mask_ratio=0.5, n_epochs=100, lr=3e-3, warmup_epochs=5)


def markdown(result):
    ds = result["datasets"]
    lines = []
    if any("models" in d for d in ds.values()):
        lines += ["| dataset | model | test accuracy | parameters | train s |", "|---|---|---|---|---|"]
        for name, d in ds.items():
            for model, m in d.get("models", {}).items():
                lines.append(f"| {name} | {model} | {100 * m['test_accuracy']:.1f} % | {m['n_parameters']:,} | "
                             f"{m['train_seconds']:.1f} |")
        lines += ["", "| dataset | CRATE per-layer | before training | after training |", "|---|---|---|---|"]
        for name, d in ds.items():
            if "models" not in d:
                continue
            c = d["models"]["CRATEEncoder"]
            for key in ("compression", "sparsity"):
                fmt = (lambda v: f"{v:.1f}") if key == "compression" else (lambda v: f"{v:.3f}")
                lines.append(f"| {name} | {key} | {', '.join(map(fmt, c[key]['before']))} | "
                             f"{', '.join(map(fmt, c[key]['after']))} |")
            lines.append(f"| {name} | compression decreases / sparsity increases with depth | | "
                         f"{c['compression_decreases_with_depth']} / {c['sparsity_increases_with_depth']} |")
        lines.append("")
    if any("masked_autoencoding" in d for d in ds.values()):
        lines += ["| dataset | masked-patch MSE (CRATE MAE) | mean image | visible-patch MSE | mean image "
                  "| full recon. MSE | mean image |", "|---|---|---|---|---|---|---|"]
        for name, d in ds.items():
            if "masked_autoencoding" in d:
                m = d["masked_autoencoding"]
                lines.append(f"| {name} | {m['reconstruction_mse']:.4f} | {m['mean_image_mse']:.4f} | "
                             f"{m['visible_reconstruction_mse']:.4f} | {m['visible_mean_image_mse']:.4f} | "
                             f"{m['full_reconstruction_mse']:.4f} | {m['full_mean_image_mse']:.4f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 500 training and 300 test images per dataset")
    parser.add_argument("--json-out")
    parser.add_argument("--md-out")
    parser.add_argument("--sections", default="classify,mae",
                        help="comma-separated: classify (the four classifiers), mae (masked autoencoding)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # lr 3e-3 for both models, chosen on a validation split of the digits training images (never
    # the test split) before this run: at lr 1e-3 CRATE underfits in 25 epochs (train accuracy
    # 95.8 %, validation 89.2 % over 3 seeds) while the ViT does not (99.7 %, 92.7 %); at 3e-3
    # CRATE reaches 99.1 % / 92.2 % and the ViT 100 % / 92.7 %.
    cfg = dict(dim=64, depth=4, heads=4, lr=3e-3, weight_decay=0.05, n_epochs=1 if args.quick else 25, batch_size=128,
               warmup_epochs=1 if args.quick else 5, label_smoothing=0.1)
    seeds = [0] if args.quick else [0, 1, 2]
    t0 = time.perf_counter()
    datasets = {}
    for name in ("digits", "mnist5k"):
        try:
            datasets[name] = run_dataset(name, cfg, seeds, args.quick, args.sections.split(","))
        except DataNotAvailableError as exc:
            datasets[name] = {"skipped": str(exc)}
    result = {
        "datasets": {k: v for k, v in datasets.items() if "skipped" not in v},
        "skipped": {k: v["skipped"] for k, v in datasets.items() if "skipped" in v},
        "meta": {"mode": "quick" if args.quick else "full", "sections": args.sections.split(","), "config": cfg, "seeds": seeds,
                 "torch_threads": 1, "torch": torch.__version__, "python": sys.version.split()[0],
                 "mae_config": MAE_CONFIG, "machine": platform.machine(), "total_seconds": time.perf_counter() - t0,
                 "vit": "pre-norm ViT of benchmarks/crate.py (vit-pytorch layout), same loop and budget"},
    }
    text = json.dumps(result, indent=1)
    print(text)
    md = markdown(result)
    print(md)
    write_outputs(text, md, args.json_out, args.md_out)


if __name__ == "__main__":
    main()
