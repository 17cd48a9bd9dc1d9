"""
=============================================
Parity over a whole Dask collection
=============================================

Parity is a property of the whole scored population, not of each partition.
:mod:`skfairlayer.dask` projects a Dask collection onto demographic parity over
*all* its rows, exactly (the in-memory answer on the concatenated data), in
two passes over the data plus the lazy output pass, with a driver that holds
one number per group and a few rows.

Here a small collection on a local cluster: the global projection against
the per-partition one (``map_blocks`` of :func:`skfairlayer.project`), which
balances every partition separately: a different constraint, which does not
give parity over the collection.
"""

# %%
# A collection of scores on a local cluster
# -----------------------------------------
# Partitions are deliberately unlike each other (their group mix drifts, as
# data sorted by time or region would), and one of them is empty.
import dask
import dask.array as da
import matplotlib.pyplot as plt
import numpy as np
from distributed import Client, LocalCluster
from sklearn.linear_model import LogisticRegression

from skfairlayer import FairnessLayerClassifier, project
from skfairlayer.dask import parity_decisions, predict_proba
from skfairlayer.dask import project as global_project

cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                       dashboard_address=":0")
client = Client(cluster)

rng = np.random.default_rng(0)
n = 100_000
share = np.linspace(0.2, 0.8, n)  # the share of group 1 drifts along the rows
groups_np = (rng.random(n) < share).astype(np.int8)
scores_np = 1 / (1 + np.exp(-(rng.normal(0, 1.5, n) - 0.6 * groups_np)))
chunks = ((0,) + (10_000,) * 10,)
scores = da.from_array(scores_np, chunks=chunks)
groups = da.from_array(groups_np, chunks=chunks)

# %%
# The global projection
# ---------------------
result = global_project(scores, groups, tolerance=0.01)
fair, gap = dask.compute(result.proba, result.verification)
print(f"shifts per group: {np.round(result.shifts, 4)}; passes: {result.passes}")
print(f"verified gap of the group means over all rows: {gap:.4f}")
print("equal to the in-memory projection:",
      np.allclose(fair, project(scores_np, groups_np, tolerance=0.01).proba, atol=1e-12))

# %%
# Per-partition projection: a different constraint
# -------------------------------------------------
# Every partition meets the tolerance on its own rows, yet the union does not:
# the partitions' group mixes differ, and balanced parts need not make a
# balanced whole.
def per_block(s, g):
    if s.size == 0 or np.unique(g).size < 2:
        return s
    return project(s, g, tolerance=0.01).proba


local = da.map_blocks(per_block, scores, groups, dtype=float).compute()
for name, out in [("global", fair), ("per partition", local)]:
    means = [out[groups_np == j].mean() for j in (0, 1)]
    print(f"{name:>14}: gap {abs(means[1] - means[0]):.4f}, "
          f"squared distortion {np.sum((out - scores_np) ** 2):.1f}")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.hist(fair - scores_np, bins=80, alpha=0.6, label="global")
ax.hist(local - scores_np, bins=80, alpha=0.6, label="per partition")
ax.set_xlabel("change of the score")
ax.set_ylabel("rows")
ax.legend()
fig.tight_layout()

# %%
# Parity decisions over the whole collection
# ------------------------------------------
# One threshold per group, the exact in-memory decisions on the concatenated
# data: a histogram pass, a pass over the rows near the thresholds, and the
# lazy decision pass (verified against the chosen counts).
decisions = parity_decisions(scores, groups, tolerance=0.01)
labels = decisions.decisions.compute()
print(f"thresholds {np.round(decisions.thresholds, 4)}, rates {np.round(decisions.rates, 4)}, "
      f"gap {decisions.gap:.4f}")

# %%
# A fitted estimator on the collection
# ------------------------------------
# :func:`skfairlayer.dask.predict_proba` and :func:`skfairlayer.dask.predict`
# apply a :class:`~skfairlayer.FairnessLayerClassifier` fitted in memory (on a
# sample) to a Dask array or DataFrame; the base model scores each partition.
# With ``inference="batch"`` (demographic parity) the layer solves over the
# whole collection, as above. With ``inference="fitted"`` the rule learned at
# fit is applied partition by partition: any criterion, here equalized odds.
y_np = (rng.random(n) < scores_np).astype(int)
features = np.column_stack([np.log(scores_np / (1 - scores_np)) + rng.normal(0, 0.5, n),
                            groups_np])
X = da.from_array(features, chunks=(chunks[0], -1))
sample = rng.choice(n, 2000, replace=False)
for criterion, inference in [("demographic_parity", "batch"), ("equalized_odds", "fitted")]:
    clf = FairnessLayerClassifier(LogisticRegression(), tolerance=0.05, criterion=criterion,
                                  inference=inference, sensitive_features=1)
    clf.fit(features[sample], y_np[sample])
    p = predict_proba(clf, X)[:, 1].compute()
    same = np.allclose(p, clf.predict_proba(features)[:, 1], rtol=0, atol=1e-12)
    positives = [p[(groups_np == j) & (y_np == 1)].mean() for j in (0, 1)]
    print(f"{criterion}, inference={inference!r}: gap of the group means "
          f"{abs(p[groups_np == 0].mean() - p[groups_np == 1].mean()):.4f}, among the "
          f"positives {abs(positives[0] - positives[1]):.4f}; the in-memory answer: {same}")

client.close()
cluster.close()
