"""The live report of a stream, and the slack schedule its certificate is built from.

See the user guide (docs/user_guide/streaming.rst) for the certificate each
engine guarantees.
"""

import html
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SLACK_SCALE", "StreamReport", "slack_schedule"]

#: ``c_b`` of the slack schedule ``b(n) = (c_b / sqrt(n) - epsilon)_+``.
SLACK_SCALE = 0.4


def slack_schedule(n, tolerance, previous=None, *, decisions=False):
    """Slack ``b(n)`` of a group with ``n`` served rows (binary demographic parity).

    Parameters
    ----------
    n : int
        Number of served rows of the group (``>= 1``).
    tolerance : float
        The parity tolerance ``epsilon``.
    previous : float, default=None
        ``b(n - 1)``; ``None`` for ``n = 1``.
    decisions : bool, default=False
        Whether the stream serves 0/1 decisions (adds the width floor).

    Returns
    -------
    slack : float
        ``max((c_b / sqrt(n) - epsilon)_+, (n b(n-1) - epsilon) / (n + 1),
        [(1 / n - epsilon) / 2])``: the target, and the floors that keep the
        safeguard's interval non-empty (see the user guide).

    Examples
    --------
    >>> from skfairlayer._stream import slack_schedule
    >>> b = None
    >>> for n in range(1, 1001):
    ...     b = slack_schedule(n, 0.02, b)
    >>> b
    0.0
    """
    target = SLACK_SCALE / math.sqrt(n) - tolerance
    floor = 0.0 if previous is None else (n * previous - tolerance) / (n + 1)
    width = 0.5 * (1.0 / n - tolerance) if decisions else 0.0
    return max(target, floor, width, 0.0)


@dataclass(frozen=True, repr=False, eq=False)
class StreamReport:
    """Live state of one output stream since its last reset.

    Printing it (or displaying it in a notebook) shows a small table: per
    group the count (and weight) and the pooled mean, then the gap, the
    certificate and whether it holds.

    Parameters
    ----------
    output : str
        ``"proba"`` (served probabilities) or ``"decisions"`` (served decisions).
    algorithm : str
        ``"pooled"`` or ``"paper"``.
    groups : ndarray of shape (n_groups,)
        Group labels, in code order.
    counts : ndarray of shape (n_groups,)
        Rows served per group.
    means : ndarray of shape (n_groups,) or (n_groups, n_columns)
        Pooled mean of the served outputs per group (the selection rate for
        decisions); NaN for a group not served yet.
    gap : float
        Pooled gap: largest difference of two groups' means (0 with fewer than
        two groups served); for ``"mean_residual"`` the largest absolute
        residual ``|mean_g(base score) - mean_g(output)|``.
    tolerance : float
        The tolerance ``epsilon``.
    certificate : float
        Guaranteed upper bound on ``gap`` at this time; ``inf`` for the
        paper's algorithm, which has no finite-time guarantee.
    duals : ndarray
        Current duals: the pairwise ``u_gh`` (pooled), or ``[lambda]`` (paper).
    shifts : ndarray
        Shift the next row of each group would get before the safeguard
        (NaN for the paper's algorithm).
    n_served : int
        Rows served since the last reset.
    n_adjusted : int
        Rows whose output the safeguard changed (0 for the paper's algorithm).
    criterion : str, default="demographic_parity"
        The criterion whose pooled statistics are reported.
    weights : ndarray or None, default=None
        Plug-in criteria: per group, the summed row weights ``W_g`` the means
        are weighted by; ``None`` when every row weighs one.

    With several groupings (marginal groups), ``groups``, ``counts``,
    ``means``, ``weights``, ``duals`` and ``shifts`` are lists with one entry
    per grouping, and ``gap`` and ``certificate`` the largest over them.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer._stream import StreamStart, start_stream
    >>> stream = start_stream(StreamStart(tolerance=0.1, labels=(np.array(["a", "b"]),)))
    >>> _ = stream.serve("proba", np.array([0.9, 0.2, 0.8, 0.3]), np.array([0, 1, 0, 1]))
    >>> print(stream.report("proba"))
    StreamReport(output='proba', algorithm='pooled', criterion='demographic_parity')
      group  count    mean
      a          2  0.7608
      b          2  0.3229
      gap                0.437859
      tolerance          0.1
      certificate        0.465685
      holds              True
      served / adjusted  4 / 0
    """

    output: str
    algorithm: str
    groups: np.ndarray
    counts: np.ndarray
    means: np.ndarray
    gap: float
    tolerance: float
    certificate: float
    duals: np.ndarray
    shifts: np.ndarray
    n_served: int
    n_adjusted: int
    criterion: str = "demographic_parity"
    weights: object = None

    @property
    def holds(self):
        """Whether the pooled gap is within the certificate (true by construction, to 1e-12)."""
        return bool(self.gap <= self.certificate + 1e-12)

    # -- display ---------------------------------------------------------------
    def _blocks(self):
        """Per grouping: (labels, counts, weights or None, means of shape (k, m))."""
        if isinstance(self.counts, np.ndarray):
            blocks = [(self.groups, self.counts, self.weights, self.means)]
        else:
            weights = self.weights if self.weights is not None else [None] * len(self.counts)
            blocks = list(zip(self.groups, self.counts, weights, self.means, strict=True))
        out = []
        for labels, counts, weights, means in blocks:
            means = np.asarray(means, dtype=np.float64)
            out.append((list(np.asarray(labels, dtype=object)), np.asarray(counts), weights,
                        means.reshape(means.shape[0], -1)))
        return out

    def _summary(self):
        return [
            ("gap", f"{self.gap:.6g}"),
            ("tolerance", f"{self.tolerance:.6g}"),
            ("certificate", f"{self.certificate:.6g}"),
            ("holds", str(self.holds)),
            ("served / adjusted", f"{self.n_served} / {self.n_adjusted}"),
        ]

    def _rows(self):
        """Header and rows of each grouping's table (strings)."""
        tables = []
        for labels, counts, weights, means in self._blocks():
            m = means.shape[1]
            head = ["group", "count"] + (["weight"] if weights is not None else [])
            head += ["mean"] if m == 1 else [f"mean[{c}]" for c in range(m)]
            rows = []
            for g, label in enumerate(labels):
                row = [str(label), str(int(counts[g]))]
                if weights is not None:
                    row.append(f"{float(np.asarray(weights)[g]):.4g}")
                row += ["-" if math.isnan(x) else f"{x:.4f}" for x in means[g]]
                rows.append(row)
            tables.append((head, rows))
        return tables

    def __repr__(self):
        title = (f"StreamReport(output={self.output!r}, algorithm={self.algorithm!r}, "
                 f"criterion={self.criterion!r})")
        lines = [title]
        for head, rows in self._rows():
            widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
            for row in [head, *rows]:
                lines.append("  " + "  ".join(
                    x.ljust(w) if i == 0 else x.rjust(w)
                    for i, (x, w) in enumerate(zip(row, widths, strict=True))))
        width = max(len(k) for k, _ in self._summary())
        lines += [f"  {k.ljust(width)}  {v}" for k, v in self._summary()]
        return "\n".join(lines)

    __str__ = __repr__

    def _repr_html_(self):
        esc = html.escape
        parts = [
            "<div><strong>StreamReport</strong> "
            f"(output={esc(self.output)}, algorithm={esc(self.algorithm)}, "
            f"criterion={esc(str(self.criterion))})"
        ]
        for head, rows in self._rows():
            parts.append("<table><thead><tr>"
                         + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>")
            for row in rows:
                parts.append("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in row) + "</tr>")
            parts.append("</tbody></table>")
        parts.append("<table><tbody>" + "".join(
            f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in self._summary())
            + "</tbody></table></div>")
        return "".join(parts)


def pooled_gap(counts, sums):
    """Largest difference of the pooled means of the served groups (0 with fewer than two)."""
    means = [s / n for n, s in zip(counts, sums, strict=True) if n > 0]
    return (max(means) - min(means)) if len(means) > 1 else 0.0


def pooled_means(counts, sums):
    """Pooled mean per group (NaN for a group not served yet)."""
    return np.array([s / n if n > 0 else np.nan for n, s in zip(counts, sums, strict=True)])
