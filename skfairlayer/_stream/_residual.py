"""Plug-in mean residual: probabilities pass through; decisions round the base scores per cell.

The plug-in rows ``|mean_g(S_c) - mean_g(p_c)| <= epsilon`` are met by the base
scores; decisions keep each cell's accumulated deficit above ``-R(N)``. The
bound is in the user guide (docs/user_guide/streaming.rst).
"""

import numpy as np

from .._validation import check_tolerance
from ._families import _squeeze
from ._report import StreamReport

__all__ = ["PooledResidual"]


class PooledResidual:
    """Plug-in mean residual: probabilities pass through; decisions round the base scores.

    Parameters
    ----------
    tolerance : float
        The tolerance ``epsilon`` of ``|mean_g(S_c) - mean_g(output_c)|``.
    n_classes : int
        Number of classes ``K`` (2 for binary outputs).
    binary : bool
        Whether scores are 1-D positive-class probabilities.
    group_sizes : sequence of int
        Number of groups of each block.
    output : {"proba", "decisions"}, default="proba"
        What the stream serves.
    """

    algorithm = "pooled"

    def __init__(self, tolerance, *, n_classes, binary, group_sizes, output="proba"):
        self.tolerance = check_tolerance(tolerance)
        self.n_classes = int(n_classes)
        self.binary = bool(binary)
        self.group_sizes = tuple(int(k) for k in group_sizes)
        self.output = output
        self.rounding = (self.n_classes - 1) ** 2 / self.n_classes
        self.reset()

    def reset(self):
        """Forget everything served."""
        K = self.n_classes
        self.counts = [np.zeros(k, dtype=np.int64) for k in self.group_sizes]
        self.score_sums = [np.zeros((k, K)) for k in self.group_sizes]
        self.output_sums = [np.zeros((k, K)) for k in self.group_sizes]
        self.cell_index = {}
        self.cell_groups = np.zeros((0, len(self.group_sizes)), dtype=np.int64)
        self.cell_counts = np.zeros(0, dtype=np.int64)
        self.cell_errors = np.zeros((0, K))
        self.n_served = 0
        self.n_adjusted = 0

    def step(self, scores, codes):
        """Serve a batch; return the outputs and the new state (not applied)."""
        if self.output == "proba":  # the scores pass through: only the group sums change
            rows = ([np.array([1.0 - s, s]) for s in scores.tolist()] if self.binary
                    else list(np.asarray(scores, dtype=np.float64)))
            return np.array(scores, dtype=np.float64), self._sums(rows, codes.tolist())
        out, new = self._rows(scores, codes)
        return np.array(out, dtype=np.int64), new

    def step_one(self, score, code):
        """:meth:`step` of one row given as Python numbers (one grouping); returns its
        output: the score(s) themselves (probabilities), or a class index."""
        if self.output == "decisions":
            out, new = self._rows(np.array([score], dtype=np.float64), np.array([[code]]))
            return out[0], new
        row = np.array([1.0 - score, score] if self.binary else score, dtype=np.float64)
        return score, self._sums([row], [[code]])

    def _sums(self, rows, codes):
        """Probabilities: the rows (arrays over the classes) added to the counts and sums of
        their groups (``codes``: one list per row); the outputs are the scores, so both
        sums take the same rows."""
        counts = [c.copy() for c in self.counts]
        score_sums = [s.copy() for s in self.score_sums]
        output_sums = [s.copy() for s in self.output_sums]
        for row, codes_i in zip(rows, codes, strict=True):
            for j, a in enumerate(codes_i):
                counts[j][a] += 1
                score_sums[j][a] += row
                output_sums[j][a] += row
        return counts, score_sums, output_sums

    def _rows(self, scores, codes):
        """Decisions: each row rounded by its cell's accumulated deficit."""
        K = self.n_classes
        counts = [c.copy() for c in self.counts]
        score_sums = [s.copy() for s in self.score_sums]
        output_sums = [s.copy() for s in self.output_sums]
        index = dict(self.cell_index)
        groups = list(self.cell_groups)
        cell_counts = self.cell_counts.tolist()
        errors = [row.copy() for row in self.cell_errors]
        out, adjusted = [], 0
        for i in range(scores.shape[0]):
            s = scores[i]
            row = np.array([1.0 - s, s]) if self.binary else np.asarray(s, dtype=np.float64)
            codes_i = codes[i].tolist()
            key = 0
            for a, k in zip(codes_i, self.group_sizes, strict=True):
                key = key * k + a
            cell = index.get(key)
            if cell is None:
                cell = index[key] = len(errors)
                errors.append(np.zeros(K))
                groups.append(np.array(codes_i, dtype=np.int64))
                cell_counts.append(0)
            n_new = cell_counts[cell] + 1
            reach = max(self.tolerance * n_new / (K - 1), (K - 1) / K)
            preferred = int(s >= 0.5) if self.binary else int(np.argmax(row))
            deficit = errors[cell] + row
            if deficit[preferred] - 1.0 >= -reach:
                value = preferred
            else:
                value = int(np.argmax(deficit))
                adjusted += 1
            deficit[value] -= 1.0
            errors[cell] = deficit
            cell_counts[cell] = n_new
            served = np.zeros(K)
            served[value] = 1.0
            for j, a in enumerate(codes_i):
                counts[j][a] += 1
                score_sums[j][a] += row
                output_sums[j][a] += served
            out.append(value)
        new = (counts, score_sums, output_sums, index, groups, cell_counts, errors, adjusted)
        return out, new

    def commit(self, new_state, n_rows):
        if self.output == "proba":
            self.counts, self.score_sums, self.output_sums = new_state
            self.n_served += n_rows
            return
        counts, score_sums, output_sums, index, groups, cell_counts, errors, adjusted = new_state
        self.counts, self.score_sums, self.output_sums = counts, score_sums, output_sums
        self.cell_index = index
        self.cell_groups = np.array(groups, dtype=np.int64).reshape(-1, len(self.group_sizes))
        self.cell_counts = np.array(cell_counts, dtype=np.int64)
        self.cell_errors = np.array(errors).reshape(-1, self.n_classes)
        self.n_served += n_rows
        self.n_adjusted += adjusted

    def _columns(self):
        return [1] if self.binary else list(range(self.n_classes))

    def means(self):
        cols = self._columns()
        out = []
        for n, s in zip(self.counts, self.output_sums, strict=True):
            with np.errstate(invalid="ignore", divide="ignore"):
                m = np.where((n > 0)[:, None], s / n[:, None], np.nan)[:, cols]
            out.append(m[:, 0] if self.binary else m)
        return out

    def gap(self):
        cols = self._columns()
        worst = 0.0
        for n, s, o in zip(self.counts, self.score_sums, self.output_sums, strict=True):
            served = n > 0
            if served.any():
                residual = (s[served] - o[served])[:, cols] / n[served][:, None]
                worst = max(worst, float(np.abs(residual).max()))
        return worst

    def certificate(self):
        if self.output == "proba":
            return self.tolerance  # the residual is exactly 0
        worst = 0.0
        per_cell = np.maximum(self.tolerance * self.cell_counts, self.rounding)
        for j, n in enumerate(self.counts):
            total = np.bincount(self.cell_groups[:, j], weights=per_cell, minlength=n.size)
            served = n > 0
            if served.any():
                worst = max(worst, float((total[served] / n[served]).max()))
        return max(worst, self.tolerance)

    def report(self, labels):
        single = len(self.group_sizes) == 1
        return StreamReport(
            output=self.output,
            algorithm=self.algorithm,
            groups=labels,
            counts=_squeeze([c.copy() for c in self.counts], single),
            means=_squeeze(self.means(), single),
            gap=self.gap(),
            tolerance=self.tolerance,
            certificate=self.certificate(),
            duals=_squeeze([np.zeros((0,)) for _ in self.group_sizes], single),
            shifts=_squeeze([np.zeros(k) for k in self.group_sizes], single),
            n_served=self.n_served,
            n_adjusted=self.n_adjusted,
            criterion="mean_residual",
        )

