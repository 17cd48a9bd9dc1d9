"""
===================================================
Comparison with fairlearn's ThresholdOptimizer
===================================================

fairlearn's :class:`~fairlearn.postprocessing.ThresholdOptimizer` is the
closest alternative: a post-processing step that learns per-group
(randomised) thresholds on the training data. The fairness layer differs in
two ways:

- it also returns *probabilities* with parity (the closest ones to the base
  model's), not only decisions;
- by default it meets parity exactly on each batch it is given
  (``inference="batch"``), rather than applying thresholds learned on the
  training set, whose parity on new data holds only approximately.

``inference="fitted"`` applies per-group thresholds learned at fit, like
ThresholdOptimizer. Both are compared below on the same base model and test
split of UCI Adult. This example needs fairlearn (``pip install fairlearn``, or
the ``demo`` or ``docs`` extra) and stops with an ImportError without it.
"""

# %%
# Setup
# -----
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skfairlayer import FairnessLayerClassifier
from skfairlayer.datasets import load_adult
from skfairlayer.metrics import demographic_parity_difference
from skfairlayer.plotting import ParityTradeoffDisplay

try:
    from fairlearn.postprocessing import ThresholdOptimizer
except ImportError as exc:  # no silent skip: this page is the comparison
    raise ImportError(
        "This example compares with fairlearn, which is not installed: "
        'pip install "skfairlayer[demo]".'
    ) from exc

X, y = load_adult(return_X_y=True)
X = X.drop(columns="race")
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, stratify=y, random_state=0
)
sex_train, sex_test = X_train["sex"], X_test["sex"]
features_train, features_test = X_train.drop(columns="sex"), X_test.drop(columns="sex")

# One base model for every method (the newton-cholesky solver is fast on this data).
base = make_pipeline(
    make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), make_column_selector(dtype_include="category")),
        (StandardScaler(), make_column_selector(dtype_include="number")),
    ),
    LogisticRegression(solver="newton-cholesky"),
).fit(features_train, y_train)
frozen = FrozenEstimator(base)


def dp(pred):
    return demographic_parity_difference(y_test, pred, sensitive_features=sex_test)


rows = {"base model": (np.mean(base.predict(features_test) == y_test),
                       dp(base.predict(features_test)))}

# %%
# The fairness layer
# ------------------
# With a :class:`~sklearn.frozen.FrozenEstimator` the layer does not refit the
# base (and needs no cross-fitting: a frozen base scores the training data as
# new data); it only learns its fitted rules, ``layer_``: one shift and one
# decision threshold per group. The base was trained without ``sex``, so the
# layer reads the groups from that column and keeps it from the base
# (``sensitive_as_feature=False``).
tolerance = 0.01
for inference in ("batch", "fitted"):
    layer = FairnessLayerClassifier(
        frozen, tolerance=tolerance, sensitive_features="sex",
        sensitive_as_feature=False, inference=inference,
    ).fit(X_train, y_train)
    pred = layer.predict(X_test)
    rows[f"skfairlayer decisions ({inference})"] = (np.mean(pred == y_test), dp(pred))

# %%
# ThresholdOptimizer
# ------------------
to = ThresholdOptimizer(
    estimator=frozen, constraints="demographic_parity", predict_method="predict_proba",
    prefit=True,
).fit(features_train, y_train, sensitive_features=sex_train)
pred = to.predict(features_test, sensitive_features=sex_test, random_state=0)
rows["fairlearn ThresholdOptimizer"] = (np.mean(pred == y_test), dp(pred))

pd.DataFrame(rows, index=["accuracy", "DP gap (decisions)"]).T.round(4)

# %%
# Trade-off over tolerances
# -------------------------
# Each method is swept over its tolerance (``tol`` for ThresholdOptimizer,
# which relaxes its constraint on the training data). The layer in batch mode
# stays within each tolerance on the test set by construction; methods that
# learn thresholds on the training set land near it. In batch mode the
# tolerance is read at prediction, so one fitted layer serves every tolerance;
# in fitted mode the rules depend on it and the display refits a clone per
# tolerance (``refit_on``).
#
# The sweep starts at 0.005, not 0: *exactly* equal selection rates
# ``c_f / n_f = c_m / n_m`` need counts in the ratio of the group sizes, and
# the test groups here (3,240 women, 6,529 men) have no common divisor, so the
# only exact solutions select nobody or everybody. Exact decisions at
# ``tolerance=0`` honour that and reject everyone (accuracy 0.76); a tolerance
# of a few ``1 / n_g`` leaves room. ThresholdOptimizer, with randomised
# decisions, meets ``tol=0`` only in expectation.
tolerances = [0.005, 0.01, 0.02, 0.05, 0.1]
fig, ax = plt.subplots()
for inference in ("batch", "fitted"):
    layer = FairnessLayerClassifier(
        frozen, sensitive_features="sex", sensitive_as_feature=False, inference=inference
    ).fit(X_train, y_train)
    ParityTradeoffDisplay.from_estimator(
        layer, X_test, y_test, tolerances=tolerances,
        refit_on=(X_train, y_train) if inference == "fitted" else None,
        name=f"skfairlayer ({inference})", ax=ax,
    )
preds = []
for tol in tolerances:
    to = ThresholdOptimizer(
        estimator=frozen, constraints="demographic_parity",
        predict_method="predict_proba", prefit=True, tol=tol,
    ).fit(features_train, y_train, sensitive_features=sex_train)
    preds.append(to.predict(features_test, sensitive_features=sex_test, random_state=0))
ParityTradeoffDisplay.from_predictions(
    y_test, preds, sensitive_features=sex_test, tolerances=tolerances,
    name="fairlearn ThresholdOptimizer", ax=ax, marker="s",
)
_ = ax.set_title("UCI Adult (sex), 30% test split")
