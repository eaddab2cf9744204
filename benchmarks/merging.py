"""Model-merging benchmark: every merger of subspacelab.merging on one small, real setting.

Setting (subspacelab.datasets.make_digit_tasks + subspacelab.merging.make_task_models): an MLP
backbone (784-256-32) pre-trained on 2000 MNIST digits, one frozen linear head per task fitted on
the pre-trained features, and one fine-tuned copy of the backbone per task. Tasks: MNIST digits
rotated by 90 degrees, inverted, mirrored top-bottom, block-shuffled, and scikit-learn's 8x8
digits at 28x28. Each task has its own train / unlabelled / validation / test split; the
entropy-based mergers adapt on the unlabelled split, the tuned baselines pick their
hyper-parameters on the labelled validation split, and every accuracy is on the test split.

Prints one JSON object

    {"tasks": [...], "results": {"<method>": {"per_task": {task: acc}, "average": acc,
     "seconds": s, "uses": "...", "warnings": [...]}}, "ranking": [...],
     "best_merger": ..., "best_concrete": ..., "concrete_minus_best_other": ..., "meta": {...}}

then a markdown table. Accuracies are averaged over ``--seeds`` independent repetitions (data
split, networks, mergers); ``seconds`` is the mean fit time of the merger (for "fine_tuned", the
time to build the whole setting).

    python benchmarks/merging.py [--quick] [--seeds N] [--json-out FILE] [--md-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import numpy as np

from subspacelab.datasets import DIGIT_TASKS, make_digit_tasks
from subspacelab.merging import (
    AdaMerger,
    ConcreteMaskMerger,
    TaskArithmeticMerger,
    TiesMerger,
    make_task_models,
    task_accuracies,
)

GRID_SCALING = [round(0.05 * i, 2) for i in range(1, 21)]
GRID_DENSITY = [0.1, 0.2, 0.5]


def fit_timed(merger, zoo, X_unlabelled):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        merger.fit(zoo.models, zoo.pretrained, X_unlabelled, zoo.heads)
        seconds = time.perf_counter() - t0
    return seconds, sorted({str(w.message) for w in caught})


def tuned(make, grid, zoo, tasks):
    """Best merger of ``grid`` by mean validation accuracy (labelled validation split)."""
    best = None
    t0 = time.perf_counter()
    for params in grid:
        merger = make(**params).fit(zoo.models, zoo.pretrained)
        val = task_accuracies(merger.merged_model_, zoo.heads, tasks, split="val").mean()
        if best is None or val > best[0]:
            best = (val, params, merger)
    return best[2], best[1], time.perf_counter() - t0


def run_seed(seed, quick):
    tasks = ["rotate90", "invert", "digits8x8"] if quick else list(DIGIT_TASKS)
    t0 = time.perf_counter()
    data = make_digit_tasks(tasks, random_state=seed)
    epochs = dict(pretrain_epochs=4, head_epochs=10, finetune_epochs=2) if quick else {}
    zoo = make_task_models(data, random_state=seed, **epochs)
    build_seconds = time.perf_counter() - t0
    X_unlabelled = [t.X_unlabelled for t in data.tasks]
    steps = (
        dict(mask=150, ada=150, lr_scale=10.0)
        if quick
        else dict(mask=2000, ada=1000, lr_scale=1.0)
    )
    out = {}

    def record(name, accs, seconds, uses, extra=None, caught=()):
        out[name] = {"acc": accs, "seconds": seconds, "uses": uses, "warnings": list(caught), **(extra or {})}

    def score(model):
        return task_accuracies(model, zoo.heads, data.tasks)

    record("fine_tuned", task_accuracies(zoo.models, zoo.heads, data.tasks), build_seconds, "labelled train data of every task (one model per task: upper bound)")
    record("pretrained", score(zoo.pretrained), 0.0, "pre-training data, task heads")
    T = len(tasks)
    closed_form = [
        ("weight_averaging", TaskArithmeticMerger(scaling=1.0 / T), "nothing"),
        ("task_arithmetic_0.3", TaskArithmeticMerger(scaling=0.3), "nothing (lambda = 0.3)"),
        ("ties_default", TiesMerger(density=0.2, scaling=1.0), "nothing (density 0.2, lambda 1, mean)"),
    ]
    for name, merger, uses in closed_form:
        seconds, caught = fit_timed(merger, zoo, X_unlabelled)
        record(name, score(merger.merged_model_), seconds, uses, caught=caught)
    ta, params, seconds = tuned(TaskArithmeticMerger, [{"scaling": s} for s in GRID_SCALING], zoo, data.tasks)
    record("task_arithmetic_tuned", score(ta.merged_model_), seconds, "labelled validation split (lambda grid)", {"params": params})
    grid = [{"density": d, "scaling": s} for d in GRID_DENSITY for s in GRID_SCALING[1::2]]
    ties, params, seconds = tuned(TiesMerger, grid, zoo, data.tasks)
    record("ties_tuned", score(ties.merged_model_), seconds, "labelled validation split (density x lambda grid)", {"params": params})
    lr = 1e-3 * steps["lr_scale"]
    learned = [
        ("adamerging_task", AdaMerger("task", n_steps=steps["ada"], learning_rate=lr, random_state=seed)),
        ("adamerging_layer", AdaMerger("layer", n_steps=steps["ada"], learning_rate=lr, random_state=seed)),
        ("concrete_task_arithmetic", ConcreteMaskMerger("task_arithmetic", n_steps=steps["mask"], learning_rate=lr, random_state=seed)),
        (
            "concrete_adamerging_task",
            ConcreteMaskMerger(
                "adamerging", granularity="task", n_steps=steps["mask"], learning_rate=lr,
                n_adamerging_steps=steps["ada"], adamerging_learning_rate=lr, random_state=seed,
            ),
        ),
        (
            "concrete_adamerging_layer",
            ConcreteMaskMerger(
                "adamerging", granularity="layer", n_steps=steps["mask"], learning_rate=lr,
                n_adamerging_steps=steps["ada"], adamerging_learning_rate=lr, random_state=seed,
            ),
        ),
    ]
    for name, merger in learned:
        seconds, caught = fit_timed(merger, zoo, X_unlabelled)
        coef = merger.coefficients_.cpu().numpy()
        record(
            name, score(merger.merged_model_), seconds, "unlabelled split of every task (prediction entropy)",
            {"coefficients_mean": float(coef.mean()), "final_entropy": float(merger.loss_curve_[-1])}, caught,
        )
    return tasks, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 tasks, short training: under a minute")
    parser.add_argument("--seeds", type=int, default=None, help="repetitions (default 1 quick, 3 full)")
    parser.add_argument("--json-out")
    parser.add_argument("--md-out")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    n_seeds = args.seeds or (1 if args.quick else 3)
    t_start = time.perf_counter()
    runs = [run_seed(seed, args.quick) for seed in range(n_seeds)]
    tasks = runs[0][0]
    methods = list(runs[0][1])
    results = {}
    for m in methods:
        accs = np.mean([r[1][m]["acc"] for r in runs], axis=0)
        entry = {
            "per_task": {t: round(float(a), 4) for t, a in zip(tasks, accs)},
            "average": round(float(accs.mean()), 4),
            "average_std_over_seeds": round(float(np.std([r[1][m]["acc"].mean() for r in runs])), 4),
            "average_per_seed": [round(float(r[1][m]["acc"].mean()), 4) for r in runs],
            "seconds": round(float(np.mean([r[1][m]["seconds"] for r in runs])), 3),
            "uses": runs[0][1][m]["uses"],
            "warnings": sorted({w for r in runs for w in r[1][m]["warnings"]}),
        }
        for key in ("params", "coefficients_mean", "final_entropy"):
            if key in runs[0][1][m]:
                entry[key] = [r[1][m][key] for r in runs]
        results[m] = entry
    mergers = [m for m in methods if m not in ("fine_tuned", "pretrained")]
    ranking = sorted(mergers, key=lambda m: -results[m]["average"])
    concrete = [m for m in mergers if m.startswith("concrete")]
    best_concrete = max(concrete, key=lambda m: results[m]["average"])
    best_other = max((m for m in mergers if m not in concrete), key=lambda m: results[m]["average"])
    report = {
        "tasks": tasks,
        "results": results,
        "ranking": ranking,
        "best_merger": ranking[0],
        "best_concrete": best_concrete,
        "best_non_concrete": best_other,
        "concrete_minus_best_other": round(results[best_concrete]["average"] - results[best_other]["average"], 4),
        "concrete_minus_best_other_per_seed": [
            round(a - b, 4)
            for a, b in zip(results[best_concrete]["average_per_seed"], results[best_other]["average_per_seed"])
        ],
        "meta": {
            "mode": "quick" if args.quick else "full",
            "seeds": n_seeds,
            "torch_threads": 1,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "total_seconds": round(time.perf_counter() - t_start, 1),
            "note": "accuracies on each task's test split, averaged over seeds; entropy-based mergers adapt on a "
            "separate unlabelled split; *_tuned pick hyper-parameters on the labelled validation split",
        },
    }
    print(json.dumps(report, indent=1))
    header = "| method | " + " | ".join(tasks) + " | average | seconds | uses |"
    lines = [header, "|" + "---|" * (len(tasks) + 4)]
    for m in ["fine_tuned", "pretrained", *ranking]:
        r = results[m]
        cells = " | ".join(f"{100 * r['per_task'][t]:.1f}" for t in tasks)
        avg = f"{100 * r['average']:.1f}" + (f" ± {100 * r['average_std_over_seeds']:.1f}" if n_seeds > 1 else "")
        lines.append(f"| {m} | {cells} | {avg} | {r['seconds']:.2f} | {r['uses']} |")
    md = "\n".join(lines)
    verdict = (
        f"\nBest Concrete merger: {best_concrete} ({100 * results[best_concrete]['average']:.1f} %); best other merger: "
        f"{best_other} ({100 * results[best_other]['average']:.1f} %); difference "
        f"{100 * report['concrete_minus_best_other']:+.1f} points.\n"
    )
    print()
    print(md + "\n" + verdict)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(report, fh, indent=1)
    if args.md_out:
        with open(args.md_out, "w") as fh:
            fh.write(md + "\n" + verdict)
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
