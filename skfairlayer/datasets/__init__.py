"""Datasets for fairness experiments: the UCI Adult data (shipped, offline) and generators."""

from ._adult import load_adult
from ._regression import make_paper_regression
from ._synthetic import make_parity_classification

__all__ = ["load_adult", "make_paper_regression", "make_parity_classification"]
