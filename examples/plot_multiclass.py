"""
===============================
Multiclass demographic parity
===============================

With :math:`K` classes, demographic parity asks that, for **every** class, the
groups' mean predicted probability of that class agree within the tolerance.
The layer projects each row of the probability matrix to the closest rows
(in squared distance) that stay on the probability simplex and meet the
:math:`K` parity constraints.

The data are generated: three classes, two groups, features shifted by group
and class odds biased by group.
"""

# %%
# Data and a multinomial model
# ----------------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from skfairlayer import FairnessLayerClassifier, project

rng = np.random.default_rng(0)
n = 6000
group = rng.integers(0, 2, n)
X = rng.normal(size=(n, 4)) + 0.8 * group[:, None] * np.array([1.0, -0.5, 0.0, 0.0])
logits = X @ rng.normal(size=(4, 3)) + np.outer(group, [-1.0, 0.0, 1.0])
y = (logits + rng.gumbel(size=(n, 3))).argmax(axis=1)  # a multinomial logit model

X_train, X_test, y_train, y_test, g_train, g_test = train_test_split(
    X, y, group, test_size=0.5, random_state=0
)
model = LogisticRegression().fit(X_train, y_train)  # the model does not see the group
proba = model.predict_proba(X_test)

# %%
# Projecting the probability matrix
# ---------------------------------
# :func:`~skfairlayer.project` accepts a matrix of class probabilities: each
# projected row stays on the simplex, and the per-class group means are
# within the tolerance. The answer is verified like every projection.
def class_means(P, groups):
    """Mean of each column of P in each group: shape (n_groups, n_classes)."""
    return np.array([P[groups == g].mean(axis=0) for g in np.unique(groups)])


def largest_gap(P, groups):
    means = class_means(P, groups)
    return (means.max(axis=0) - means.min(axis=0)).max()


result = project(proba, g_test, tolerance=0.02)
fair = result.proba
print(f"rows on the simplex: {np.allclose(fair.sum(axis=1), 1)} (min {fair.min():.3g})")
print(f"largest per-class gap: before {largest_gap(proba, g_test):.3f}, after {result.gap:.4f}")

# %%
# Per-class group means, before and after
# ---------------------------------------

fig, axes = plt.subplots(1, 2, sharey=True, figsize=(9, 3.5), layout="constrained")
width = 0.38
for ax, P, title in ((axes[0], proba, "base model"), (axes[1], fair, "after the layer")):
    means = class_means(P, g_test)
    for g in (0, 1):
        ax.bar(np.arange(3) + (g - 0.5) * width, means[g], width, label=f"group {g}")
    ax.set_title(f"{title} (largest gap {largest_gap(P, g_test):.3f})")
    ax.set_xticks(range(3), [f"class {k}" for k in range(3)])
axes[0].set_ylabel("mean predicted probability")
_ = axes[1].legend()

# %%
# What it costs
# -------------
# The projection moves the probabilities as little as possible; accuracy of
# the arg-max changes little. Note that the arg-max of projected
# probabilities does not itself meet parity of the *predicted classes* (the
# same effect as rounding in the binary case, see :ref:`decisions`).
pred_base, pred_fair = proba.argmax(axis=1), fair.argmax(axis=1)
print(f"accuracy of the arg-max: base {np.mean(pred_base == y_test):.3f}, "
      f"projected {np.mean(pred_fair == y_test):.3f}")
shares = class_means(np.eye(3)[pred_fair], g_test)
print("share of each predicted class per group (projected arg-max):")
print(np.round(shares, 3))

# %%
# Decisions with parity: the estimator
# ------------------------------------
# :class:`~skfairlayer.FairnessLayerClassifier` handles multiclass targets:
# ``predict_proba`` is the projection above, and ``predict`` solves its own
# problem — the class assignments of maximal expected accuracy whose
# per-class *shares* differ by at most the tolerance between groups. Here the
# group is appended as the last column, where the layer reads it (and drops it
# before the base model).
clf = FairnessLayerClassifier(
    LogisticRegression(), tolerance=0.02, sensitive_features=-1
).fit(np.c_[X_train, g_train], y_train)
pred = clf.predict(np.c_[X_test, g_test])
shares = class_means(np.eye(3)[pred], g_test)
print(f"accuracy of the parity decisions: {np.mean(pred == y_test):.3f}")
print("share of each predicted class per group (parity decisions):")
print(np.round(shares, 3))
print(f"largest gap of the class shares: {largest_gap(np.eye(3)[pred], g_test):.4f}")
