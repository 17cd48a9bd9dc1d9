"""Test-set parity of the fitted rules (inference="fitted"), learned in-sample or cross-fitted.

UCI Adult (numeric columns + sex), stratified 70/30 split, tolerance 0.01. For each base,
the decision and probability gaps on the test set with ``cv=None`` (rules from the base's
in-sample scores) and ``cv=5`` (out-of-fold scores), and single-row ``predict`` over 1,000
test rows. Usage: ``python benchmarks/bench_fitted_inference.py [--seeds 1]``.
"""

import argparse

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skfairlayer import FairnessLayerClassifier
from skfairlayer.datasets import load_adult
from skfairlayer.metrics import demographic_parity_difference

COLUMNS = ["age", "education-num", "hours-per-week", "capital-gain", "capital-loss", "sex"]


def _bases(seed):
    return {
        "LogisticRegression": make_pipeline(StandardScaler(), LogisticRegression()),
        "RandomForest": RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1),
        "HistGradientBoosting": HistGradientBoostingClassifier(random_state=seed),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args(argv)
    X, y = load_adult(return_X_y=True)
    X = X[COLUMNS].assign(sex=(X["sex"] == "Male").astype(int))
    print("| base | cv | decision gap (test) | proba gap (test) | single-row decision gap |")
    print("|---|---|---:|---:|---:|")
    for seed in range(args.seeds):
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
        for name, base in _bases(seed).items():
            for cv in (None, 5):
                clf = FairnessLayerClassifier(
                    base, tolerance=0.01, sensitive_features="sex", inference="fitted", cv=cv
                ).fit(Xtr, ytr)
                sex = Xte["sex"]
                dec = demographic_parity_difference(None, clf.predict(Xte), sensitive_features=sex)
                proba = clf.predict_proba(Xte)[:, 1]
                pgap = demographic_parity_difference(None, proba, sensitive_features=sex)
                rows = Xte.iloc[:1000]
                single = np.array([clf.predict(rows.iloc[[i]])[0] for i in range(len(rows))])
                sgap = demographic_parity_difference(None, single, sensitive_features=rows["sex"])
                print(f"| {name} | {cv} | {dec:.4f} | {pgap:.4f} | {sgap:.4f} |")


if __name__ == "__main__":
    main()
