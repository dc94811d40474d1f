"""Margin losses for face recognition (one interface per framework)."""

from vlrface.losses.arcface import ArcFaceHead, arcface_loss

__all__ = ["ArcFaceHead", "arcface_loss"]
