"""Datasets for fairness experiments: the UCI Adult data (shipped, offline) and generators."""

from ._adult import load_adult
from ._synthetic import make_parity_classification

__all__ = ["load_adult", "make_parity_classification"]
