"""Probability calibration and decision thresholds, fitted on validation data only."""

from .temperature import (
    TemperatureFit,
    choose_threshold,
    fit_temperature,
    logit_nll,
    sigmoid,
)

__all__ = ["TemperatureFit", "choose_threshold", "fit_temperature", "logit_nll", "sigmoid"]
