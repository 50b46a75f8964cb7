"""Models relprop ships or knows how to load."""

from __future__ import annotations

from .digits import DigitsCNN, digits_test_set, load_digits_model

__all__ = ["DigitsCNN", "digits_test_set", "load_digits_model"]
