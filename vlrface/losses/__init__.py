"""Margin losses for face recognition, one package per framework with the same names, parameters
and math.

* ``vlrface.losses.keras``: ``ArcFaceHead``, ``CosFaceHead``, ``SphereFaceHead``,
  ``AdaFaceHead``, ``LaplacianMarginHead`` with ``arcface_loss`` (softmax cross-entropy of any
  head's logits), ``octuplet_loss`` and ``feature_distillation_loss``;
* ``vlrface.losses.torch``: the same heads (``margins``) and pair losses (``pairs``);
* ``vlrface.losses.quality``: Laplacian image quality (numpy, framework-free).

This package itself imports neither TensorFlow nor torch.
"""
