"""Serving a network row by row with a pooled parity certificate (streaming layer).

The pooled primal-dual of the user guide's streaming page on
tensors: per group two duals move by the *increment* of the pooled constraint
``V_g = N_g (m_g - m - eps / 2)`` (and its mirror), so that at every moment
``m_g - m <= eps / 2 + lambda_g / (step N_g)``: a certificate on the pooled gap of
everything served since the last :meth:`reset`. The state lives in registered
buffers and survives ``state_dict`` round trips.
"""

import math

import torch

__all__ = ["StreamingFairnessLayer"]


class StreamingFairnessLayer(torch.nn.Module):
    """Serve outputs one call at a time, keeping the pooled group means within tolerance.

    Each call is one step: its rows are shifted by the current duals,
    ``p_i = clip(s_i - (d_{g_i} - sum_g pi_g d_g), lb, ub)`` with
    ``d = lambda^+ - lambda^-`` and ``pi`` the running group shares, then the
    pooled sums and the duals are updated. A call may hold a single row.

    Parameters
    ----------
    n_groups : int
        Number of groups.
    tolerance : float, default=0.01
        Target pooled gap ``eps`` between group means.
    step : float, default=0.02
        Dual step ``eta``.
    bounds : tuple of float, default=(0.0, 1.0)
        Output bounds (``None`` for none).

    Examples
    --------
    >>> import torch
    >>> from skfairlayer.torch import StreamingFairnessLayer
    >>> layer = StreamingFairnessLayer(n_groups=2, tolerance=0.05)
    >>> g = torch.Generator().manual_seed(0)
    >>> for _ in range(2000):
    ...     a = torch.randint(0, 2, (1,), generator=g)
    ...     s = (0.3 + 0.3 * a + 0.2 * torch.rand(1, generator=g)).double()
    ...     _ = layer(s, a)
    >>> bool(layer.pooled_gap() <= layer.certificate())
    True
    """

    def __init__(self, n_groups, tolerance=0.01, step=0.02, bounds=(0.0, 1.0)):
        super().__init__()
        if not isinstance(n_groups, int) or n_groups < 1:
            raise ValueError(f"n_groups must be a positive int. Got {n_groups!r} instead.")
        if not (math.isfinite(tolerance) and tolerance >= 0):
            raise ValueError(f"tolerance must be a finite float >= 0. Got {tolerance!r} instead.")
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"step must be a finite float > 0. Got {step!r} instead.")
        self.n_groups, self.tolerance, self.step = n_groups, float(tolerance), float(step)
        lo, hi = bounds
        self.bounds = (-math.inf if lo is None else float(lo), math.inf if hi is None else float(hi))
        for name in ("counts", "sums", "dual_up", "dual_down", "v_up", "v_down"):
            self.register_buffer(name, torch.zeros(n_groups, dtype=torch.float64))

    def reset(self):
        """Forget everything served (pooled sums, duals)."""
        for buf in (self.counts, self.sums, self.dual_up, self.dual_down, self.v_up, self.v_down):
            buf.zero_()

    def forward(self, scores, groups):
        """Serve rows: shift them by the current duals, then update the pooled state.

        Parameters
        ----------
        scores : Tensor of shape (n_rows,)
            Outputs of the rows served in this step (one or more).
        groups : LongTensor of shape (n_rows,)
            Group code of each row.

        Returns
        -------
        outputs : Tensor of the shape and dtype of ``scores``
        """
        k = self.n_groups
        g = groups.to(device=self.counts.device, dtype=torch.int64).reshape(-1)
        s = scores.to(device=self.counts.device, dtype=torch.float64).reshape(-1)
        total = self.counts.sum()
        shares = torch.where(total > 0, self.counts / total.clamp_min(1.0),
                             torch.full_like(self.counts, 1.0 / k))
        d = self.dual_up - self.dual_down
        shift = d[g] - (shares * d).sum()
        p = (s - shift).clamp(*self.bounds)
        with torch.no_grad():
            self.counts.index_add_(0, g, torch.ones_like(p))
            self.sums.index_add_(0, g, p)
            up, down = self._constraints()
            self.dual_up.add_(self.step * (up - self.v_up)).clamp_(min=0.0)
            self.dual_down.add_(self.step * (down - self.v_down)).clamp_(min=0.0)
            self.v_up.copy_(up)
            self.v_down.copy_(down)
        return p.to(scores.dtype).reshape(scores.shape)

    def _constraints(self):
        n = self.counts
        seen = n > 0
        m = self.sums / n.clamp_min(1.0)
        centre = self.sums.sum() / n.sum().clamp_min(1.0)
        half = self.tolerance / 2
        up = torch.where(seen, n * (m - centre - half), torch.zeros_like(m))
        down = torch.where(seen, n * (centre - m - half), torch.zeros_like(m))
        return up, down

    def pooled_gap(self):
        """Largest difference between the pooled means of two served groups.

        Returns
        -------
        gap : Tensor of shape ()
        """
        seen = self.counts > 0
        m = self.sums / self.counts.clamp_min(1.0)
        if int(seen.sum()) < 2:
            return torch.zeros((), dtype=torch.float64, device=m.device)
        return m[seen].max() - m[seen].min()

    def certificate(self):
        """Upper bound on :meth:`pooled_gap` from the duals: ``eps + max_g l+_g/(eta N_g) + max_h l-_h/(eta N_h)``.

        Follows from ``V_g(T) <= lambda_g(T) / eta`` (telescoping increments);
        it tends to ``eps`` as every group's count grows with bounded duals.

        Returns
        -------
        bound : Tensor of shape ()
        """
        seen = self.counts > 0
        n = self.counts.clamp_min(1.0)
        up = torch.where(seen, self.dual_up / (self.step * n), torch.zeros_like(n)).amax()
        down = torch.where(seen, self.dual_down / (self.step * n), torch.zeros_like(n)).amax()
        return self.tolerance + up + down

    def extra_repr(self):
        """The layer's settings, shown in its ``repr``.

        Returns
        -------
        text : str
        """
        return f"n_groups={self.n_groups}, tolerance={self.tolerance}, step={self.step}"
