"""vlrface: very-low-resolution face recognition, from data to a promoted ARM-ready model."""

import os

# larq and LCE need Keras 2: this must hold before anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from vlrface.logs import quiet  # noqa: E402

quiet()  # what the libraries below may print (vlrface.logs): before TensorFlow is imported

__version__ = "0.1.0"
