"""The PyTorch margin heads (``margins``) and pair losses (``pairs``): the same names, parameters
and math as ``vlrface.losses.keras``."""
