"""
=============================
Quickstart on UCI Adult (sex)
=============================

Fit a logistic regression on the UCI Adult census data, append a fairness
layer on the sensitive feature ``sex``, and look at what changes: the group
means of the probabilities, the selection rates of the decisions, and the
accuracy.
"""

# %%
# Data and base model
# -------------------
# :func:`~skfairlayer.datasets.load_adult` ships with the package (no network).
# ``X`` keeps the ``sex`` column: the layer reads the groups from it by name,
# and ``X`` reaches the base untouched (``sensitive_as_feature=True``, the
# default), whose pipeline one-hot encodes ``sex`` with the other categorical
# columns. Pass ``sensitive_as_feature=False`` to keep the column from the base.
import numpy as np
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skfairlayer import FairnessLayerClassifier
from skfairlayer.datasets import load_adult
from skfairlayer.metrics import demographic_parity_difference, group_summary
from skfairlayer.plotting import GroupScoreDisplay

X, y = load_adult(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, random_state=0, stratify=y
)
sex_test = X_test["sex"]

base = make_pipeline(
    make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), make_column_selector(dtype_include="category")),
        (StandardScaler(), make_column_selector(dtype_include="number")),
    ),
    LogisticRegression(solver="newton-cholesky"),
)

# %%
# The base model alone
# --------------------
# The base model's probabilities and decisions differ a lot between groups.
base.fit(X_train, y_train)
base_proba = base.predict_proba(X_test)[:, 1]
base_pred = base.predict(X_test)
print(f"accuracy          {np.mean(base_pred == y_test):.3f}")
print(f"DP gap, proba     {demographic_parity_difference(y_test, base_proba, sensitive_features=sex_test):.3f}")
print(f"DP gap, decisions {demographic_parity_difference(y_test, base_pred, sensitive_features=sex_test):.3f}")

# %%
# With a fairness layer
# ---------------------
# :class:`~skfairlayer.FairnessLayerClassifier` wraps the same model. Its
# ``predict_proba`` returns, for each batch, the probabilities closest to the
# base's whose group means differ by at most ``tolerance``; its ``predict``
# returns the decisions of maximal expected accuracy whose selection rates do.
# It refits a clone of the base, plus one per fold of ``cv=5`` (the default):
# the rules it learns for single rows and one-group batches (``layer_``) come
# from out-of-fold scores, like
# :class:`~sklearn.calibration.CalibratedClassifierCV`.
clf = FairnessLayerClassifier(base, tolerance=0.01, sensitive_features="sex")
clf.fit(X_train, y_train)
proba = clf.predict_proba(X_test)[:, 1]
pred = clf.predict(X_test)
print(f"accuracy          {np.mean(pred == y_test):.3f}")
print(f"DP gap, proba     {demographic_parity_difference(y_test, proba, sensitive_features=sex_test):.4f}")
print(f"DP gap, decisions {demographic_parity_difference(y_test, pred, sensitive_features=sex_test):.4f}")

# %%
# Both gaps are now within the tolerance of 0.01, on this batch, by
# construction (every projection is verified). The per-group table shows where
# the change happened:
group_summary(y_test, pred, sensitive_features=sex_test)

# %%
# Rounding projected probabilities does *not* keep parity
# -------------------------------------------------------
# Equal mean probabilities do not mean equal shares above 0.5. Thresholding
# the projected probabilities leaves a large gap in selection rates; this is
# why :meth:`~skfairlayer.FairnessLayerClassifier.predict` solves its own
# problem instead (see :ref:`decisions`).
rounded = (proba >= 0.5).astype(int)
print(f"DP gap, rounded projected proba {demographic_parity_difference(y_test, rounded, sensitive_features=sex_test):.3f}")

# %%
# What the layer does to the scores
# ---------------------------------
# One shift per group moves the distributions so that their means (dashed)
# meet; the shapes are kept (up to clipping at 0 and 1).
disp = GroupScoreDisplay.from_estimator(clf, X_test)
