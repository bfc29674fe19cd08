"""Numeric scores over images: mean absolute error, root mean squared error (both in the target's
units) and R^2, the share of the truth's variance the predictions explain (1 - SS_res / SS_tot;
undefined when every true value is the same)."""

from __future__ import annotations

import math

import numpy as np


def number_summary(true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    if not len(true):
        return {"mae": math.nan, "rmse": math.nan, "r2": math.nan}
    error = predicted.astype(np.float64) - true
    spread = float(((true - true.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "r2": 1 - float((error**2).sum()) / spread if spread > 0 else math.nan,
    }
