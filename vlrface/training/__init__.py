"""Training loops: ``common`` (framework-free: seeding, schedules, the non-finite-loss error),
``keras`` (TensorFlow/larq) and ``torch`` (PyTorch)."""
