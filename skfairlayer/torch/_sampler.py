"""A batch sampler that puts every group in every training batch."""

import math

import numpy as np
import torch

__all__ = ["GroupStratifiedBatchSampler"]


class GroupStratifiedBatchSampler(torch.utils.data.Sampler):
    """Batches whose group composition follows the data's, with every group present.

    The fairness layer constrains the groups present in a batch; a group absent from a
    batch is left out of that batch's constraints. This sampler gives each batch
    ``max(min_per_group, round(share_g * batch_size))`` rows of every group ``g``
    (largest remainders), drawn without replacement within an epoch (a group smaller
    than its share of the epoch's batches is reshuffled and reused).

    Parameters
    ----------
    groups : array-like of int of shape (n_samples,)
        Group code of every row of the dataset.
    batch_size : int
        Rows per batch; at least ``min_per_group`` times the number of groups.
    min_per_group : int, default=1
        Fewest rows of each group in a batch.
    drop_last : bool, default=False
        Drop the last, incomplete epoch's remainder: ``len`` is ``n // batch_size``
        instead of ``ceil(n / batch_size)``.
    seed : int or None, default=None
        Seed of the shuffles (the epoch number is added, so epochs differ).

    Examples
    --------
    >>> from skfairlayer.torch import GroupStratifiedBatchSampler
    >>> groups = [0] * 90 + [1] * 10
    >>> batches = list(GroupStratifiedBatchSampler(groups, batch_size=20, seed=0))
    >>> len(batches), sorted(sum(i >= 90 for i in b) for b in batches)
    (5, [2, 2, 2, 2, 2])
    """

    def __init__(self, groups, batch_size, *, min_per_group=1, drop_last=False, seed=None):
        codes = np.asarray(torch.as_tensor(groups).cpu()).reshape(-1)
        if codes.dtype.kind not in "iu" or (codes.size and codes.min() < 0):
            raise ValueError(f"groups must be non-negative integer codes. Got {codes[:5]!r} instead.")
        self.members = [np.flatnonzero(codes == g) for g in np.unique(codes)]
        k = len(self.members)
        if not isinstance(batch_size, int) or batch_size < min_per_group * k:
            raise ValueError(
                f"batch_size must be an int >= min_per_group * n_groups = {min_per_group * k}. "
                f"Got {batch_size!r} instead."
            )
        self.batch_size, self.min_per_group = batch_size, min_per_group
        self.drop_last, self.seed, self.epoch = drop_last, seed, 0
        self.n = codes.size
        self.quota = self._quota(np.array([m.size for m in self.members], dtype=float))

    def _quota(self, sizes):
        b, lo = self.batch_size, self.min_per_group
        share = sizes / sizes.sum() * b
        q = np.maximum(np.floor(share).astype(int), lo)
        rest = b - q.sum()
        order = np.argsort(q - share)  # largest remainders first
        while rest > 0:
            q[order[: rest]] += 1
            rest = b - q.sum()
        while rest < 0:  # minimums taken from the largest groups
            j = int(np.argmax(q))
            q[j] -= 1
            rest += 1
        return q

    def __len__(self):
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng(None if self.seed is None else self.seed + self.epoch)
        self.epoch += 1
        n_batches = len(self)
        streams = []
        for members, q in zip(self.members, self.quota, strict=True):
            need = q * n_batches
            reps = math.ceil(need / members.size)
            streams.append(np.concatenate([rng.permutation(members) for _ in range(reps)])[:need])
        for b in range(n_batches):
            batch = np.concatenate([s[b * q:(b + 1) * q] for s, q in zip(streams, self.quota,
                                                                           strict=True)])
            yield rng.permutation(batch).tolist()
