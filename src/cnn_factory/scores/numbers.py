"""Numeric scores over images: mean absolute error, root mean squared error (both in the target's
units) and R^2, the share of the truth's variance the predictions explain (1 - SS_res / SS_tot;
undefined when every true value is the same); for a measure, its agreement with the truth."""

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


def agreement_summary(true: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """A measure against its truth, over the images that have one (NaN truths left out): MAE and R^2
    as `number_summary`, the mean difference (`bias`, measured - true), and the 95% limits of
    agreement, bias -+ 1.96 standard deviations of the differences (Bland and Altman 1986; the
    sample SD, n - 1); `images`, how many were compared."""
    known = ~np.isnan(true)
    true, measured = np.asarray(true, np.float64)[known], np.asarray(measured, np.float64)[known]
    figures = {k: v for k, v in number_summary(true, measured).items() if k != "rmse"}
    difference = measured - true
    bias = float(difference.mean()) if len(difference) else math.nan
    spread = 1.96 * float(difference.std(ddof=1)) if len(difference) > 1 else math.nan
    return {**figures, "bias": bias, "loa_low": bias - spread, "loa_high": bias + spread, "images": float(len(true))}
