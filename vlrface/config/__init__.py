"""Pipeline configuration: strict schemas, so a typo fails before any work.

``common`` holds the sections both tracks share and the loader of configuration files;
``keras`` the Keras (larq/LCE) pipeline's schema, ``torch`` the PyTorch (ONNX) pipelines'.
Nothing here imports TensorFlow or torch.
"""
