"""
Hyper-parameter search on a Dask cluster
========================================

Hyper-parameter search over a subspacelab estimator with joblib's Dask backend.

    python examples/slow_scale_gridsearch_dask.py

GridSearchCV(n_jobs=-1) runs its (candidate, fold) fits through joblib; inside
joblib.parallel_config(backend="dask") they become tasks of the Dask cluster the Client is
connected to (a LocalCluster here). The search result is the same as with the default backend,
which the script checks.

On a real cluster, connect Client("tcp://scheduler:8786") instead: the fits spread over all
its workers (each needs subspacelab installed). Keep the estimator single-threaded per fit when
the workers' threads already fill the cores.
"""

import time

import joblib
from distributed import Client, LocalCluster
from sklearn.model_selection import GridSearchCV

from subspacelab import GrassmannClassifier
from subspacelab.datasets import load_digits


def main():
    X, y = load_digits()  # intensities in [0, 1]
    grid = {"subspace_dim": [2, 4, 8], "scale": [10.0, 25.0]}
    search = GridSearchCV(GrassmannClassifier(n_epochs=5, random_state=0), grid, cv=3, n_jobs=-1)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        print("cluster:", client)
        t0 = time.perf_counter()
        with joblib.parallel_config(backend="dask"):
            search.fit(X, y)
        print(f"dask backend: best {search.best_params_} (CV accuracy {search.best_score_:.3f}), "
              f"{len(search.cv_results_['params']) * 3} fits in {time.perf_counter() - t0:.1f} s")
    local = GridSearchCV(GrassmannClassifier(n_epochs=5, random_state=0), grid, cv=3, n_jobs=1).fit(X, y)
    print("same result as the default backend:", local.best_params_ == search.best_params_
          and abs(local.best_score_ - search.best_score_) < 1e-12)


if __name__ == "__main__":
    main()
