"""
==========================================
Streaming: a pooled parity gap, row by row
==========================================

Some predictions are served one at a time — a loan application, a click —
and each answer is final. A single row cannot be projected, so the batch
layer does not apply. What can be audited is the **pooled** gap: over
everything served since the stream started, do the groups' mean outputs
differ by at most the tolerance?

:meth:`~skfairlayer.FairnessLayerClassifier.partial_predict_proba` serves
rows to such a stream with a primal–dual method on the pooled constraint, plus
an exact safeguard, and
:meth:`~skfairlayer.FairnessLayerClassifier.stream_report` certifies, at
every moment, an upper bound on the pooled gap. Here we serve a stream row by
row and watch the gap converge, compare with the paper's online algorithm,
and let the group shares drift.
"""

# %%
# A model and a stream
# --------------------
# The layer is fitted on 1,000 rows; its fitted per-group shifts start the
# stream. Then 4,000 new rows arrive one at a time.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression

from skfairlayer import FairnessLayerClassifier
from skfairlayer.datasets import make_parity_classification
from skfairlayer.plotting import StreamingGapDisplay

X, y, group = make_parity_classification(5000, bias=1.0, random_state=0)
X = np.c_[X, group]
X_fit, y_fit, X_stream = X[:1000], y[:1000], X[1000:]

clf = FairnessLayerClassifier(
    LogisticRegression(), tolerance=0.02, sensitive_features=-1
).fit(X_fit, y_fit)

# %%
# Serving row by row
# ------------------
# :class:`~skfairlayer.plotting.StreamingGapDisplay` serves the rows through
# ``partial_predict_proba`` and reads ``stream_report()`` after each one. The
# grey curve is the pooled gap the base model alone would have served; the
# shaded band is the certificate, which the served gap never leaves. It
# shrinks like :math:`1/\sqrt{\min_g N_g}` and reaches the tolerance once
# every group has a few hundred rows. The display serves a copy of ``clf``
# (whose own stream stays untouched) and keeps what each report said.
disp = StreamingGapDisplay.from_estimator(clf, X_stream, batch_size=1, log_x=True)
print(f"served {disp.n_seen[-1]} rows: pooled gap {disp.gaps[-1]:.4f}, "
      f"certificate {disp.certificate[-1]:.4f}, base gap {disp.raw_gaps[-1]:.3f}")

# %%
# Serving ``clf`` itself works the same way, a row at a time:
for row in X_stream[:500]:
    clf.partial_predict_proba(row.reshape(1, -1))
report = clf.stream_report()
print(report)
clf.reset_stream()

# %%
# The paper's online algorithm
# ----------------------------
# The algorithm of Troxell et al. updates its penalty from the gap *within each
# batch*. A batch of one row holds one group, whose gap is 0 by definition, so
# the penalty never grows and nothing is corrected; larger batches help.
# ``stream_algorithm="paper"`` reproduces it (it has no certificate).
fig, ax = plt.subplots(layout="constrained")
for batch_size in (1, 16):
    paper = FairnessLayerClassifier(
        LogisticRegression(), tolerance=0.02, sensitive_features=-1,
        stream_algorithm="paper",
    ).fit(X_fit, y_fit)
    StreamingGapDisplay.from_estimator(
        paper, X_stream, batch_size=batch_size, show_raw=False, ax=ax, log_x=True,
        name=f"paper, batches of {batch_size}",
    )
StreamingGapDisplay.from_estimator(
    clf, X_stream, batch_size=1, show_raw=False, ax=ax, log_x=True,
    name="skfairlayer (pooled), batches of 1",
)
ax.set_ylim(0, 0.3)
ax.get_legend().remove()  # one legend below the axes, clear of the curves
fig.legend(loc="outside lower center", ncols=2, fontsize="small")
_ = ax.set_title("pooled gap of the served probabilities")

# %%
# Drift in the group shares
# -------------------------
# The stream does not assume that groups arrive in the proportions seen at fit.
# Here the rows are reordered so that group 0 dominates the start of the
# stream and group 1 its end: the pooled gap still ends within the tolerance,
# and the certificate holds throughout.
rng = np.random.default_rng(0)
n_stream = len(X_stream)
arrival = np.where(X_stream[:, -1] == 1, rng.beta(1.5, 1, n_stream), rng.beta(1, 1.5, n_stream))
order = np.argsort(arrival)
disp = StreamingGapDisplay.from_estimator(clf, X_stream[order], batch_size=1, log_x=True)
disp.ax_.set_title("group shares drifting from group 0 to group 1")
disp.ax_.set_ylim(0, 0.8)  # room above the curves for the legend
print(f"pooled gap {disp.gaps[-1]:.4f} (tolerance 0.02), certificate {disp.certificate[-1]:.4f}")

# %%
# Decisions
# ---------
# ``partial_predict`` serves 0/1 decisions with the same guarantee on pooled
# selection rates (``stream_report("decisions")``).
disp = StreamingGapDisplay.from_estimator(
    clf, X_stream, batch_size=1, output="decisions", log_x=True
)
disp.ax_.set_ylabel("pooled selection-rate gap")
print(f"selection-rate gap {disp.gaps[-1]:.4f}, certificate {disp.certificate[-1]:.4f}")
