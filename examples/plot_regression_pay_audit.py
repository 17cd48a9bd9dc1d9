"""
===========================================================
A pay-style audit: mean residual parity over two attributes
===========================================================

An employer audits a pay model: does it over- or under-predict some groups on
average? :func:`~skfairlayer.audit_residuals` projects the model's predictions
on a labelled batch onto *mean residual parity* (every group's mean residual
``mean(y - prediction)`` within a tolerance) with the least change in squared
distance, and reports per group who moved and by how much.
:class:`~skfairlayer.FairnessLayerRegressor` then puts a fairness layer on the
model itself.

No openly licensed pay data set ships offline here, so this example uses a
stand-in from the shipped UCI Adult census data: the continuous target is
``hours-per-week``, and the attributes are ``sex`` and ``race``.
"""

# %%
# Data and base model
# -------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skfairlayer import FairnessLayerRegressor, audit_residuals
from skfairlayer.datasets import load_adult
from skfairlayer.metrics import mean_difference, residual_difference

X, income = load_adult(return_X_y=True)
y = X.pop("hours-per-week").to_numpy(dtype=float)
X = X.assign(income=income)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
attrs_test = X_test[["sex", "race"]]

base = make_pipeline(
    make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), make_column_selector(dtype_include="category")),
        (StandardScaler(), make_column_selector(dtype_include="number")),
    ),
    Ridge(),
)
base.fit(X_train.drop(columns=["sex", "race"]), y_train)
pred = base.predict(X_test.drop(columns=["sex", "race"]))

# %%
# The audit
# ---------
# Each attribute's groups separately (``groups="marginal"``): the mean residual
# of women, of men, and of every race value must be within 0.25 hours.
audit = audit_residuals(
    y_test, pred, sensitive_features=attrs_test, tolerance=0.25, groups="marginal"
)
print(audit)

# %%
# The table names the groups whose predictions had to move, and by how much on
# average; the projection moves nothing in groups already within the tolerance,
# except to compensate for another attribute's groups they overlap. The change
# is small next to the model's error:
rmse = np.sqrt(np.mean((y_test - pred) ** 2))
print(f"rms change {audit.distortion:.3f} h, model rmse {rmse:.2f} h")
print(f"residual gap, sex:  before {residual_difference(y_test, pred, sensitive_features=attrs_test['sex']):.2f} h, "
      f"after {residual_difference(y_test, audit.adjusted, sensitive_features=attrs_test['sex']):.2f} h")

fig, ax = plt.subplots(figsize=(7, 3.5))
names = [f"{r['group']}" for r in audit.table]
positions = np.arange(len(names))
ax.bar(positions - 0.2, [r["residual_before"] for r in audit.table], 0.4, label="model")
ax.bar(positions + 0.2, [r["residual_after"] for r in audit.table], 0.4, label="audited")
ax.axhspan(-0.25, 0.25, color="grey", alpha=0.2, label="tolerance")
ax.set_xticks(positions, names, rotation=30, ha="right")
ax.set_ylabel("mean residual (hours)")
ax.legend()
fig.tight_layout()

# %%
# A fairness layer on the model
# -----------------------------
# :class:`~skfairlayer.FairnessLayerRegressor` wraps the same pipeline; with
# ``criterion="demographic_parity"`` each batch's predictions get group means
# within the tolerance (here for both attributes at once), and with
# ``bounds="target"`` they stay within the training range.
reg = FairnessLayerRegressor(
    base, tolerance=0.25, sensitive_features=["sex", "race"], sensitive_as_feature=False,
    groups="marginal", bounds="target", cv=None,
).fit(X_train, y_train)
fair = reg.predict(X_test)
for name in ["sex", "race"]:
    before = mean_difference(None, pred, sensitive_features=attrs_test[name])
    after = mean_difference(None, fair, sensitive_features=attrs_test[name])
    print(f"mean gap, {name:4s}: base {before:.2f} h, layer {after:.3f} h")
print(f"R^2: base {base.score(X_test.drop(columns=['sex', 'race']), y_test):.3f}, "
      f"layer {reg.score(X_test, y_test):.3f}")

# %%
# Equal means are a policy choice: hours worked differ between the groups in
# the data, so demographic parity of predictions costs accuracy, while mean
# residual parity only removes the model's systematic over- or
# under-prediction of a group.
