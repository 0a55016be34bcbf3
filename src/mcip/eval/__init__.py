"""Evaluation: metrics as pure tensor functions (definitions in their docstrings)."""

from mcip.eval.metrics import retrieval_average_precision, text_to_image_recall

__all__ = ["retrieval_average_precision", "text_to_image_recall"]
