"""Efficiency figures of a Keras/larq model, as ``larq.models.summary`` reports them.

``binary_macs`` and ``float_macs`` are larq's MAC counts of 1-bit and 32-bit operations,
``params`` its weight count (BatchNorm moving statistics excluded, as in the paper's Table 2) and
``size_mib`` its model size with binary weights packed.
"""

from __future__ import annotations


def efficiency(model) -> dict:
    import larq as lq

    profile = lq.models.ModelProfile(model)
    return {
        "model": model.name,
        "binary_macs": int(profile.op_count("mac", 1)),
        "float_macs": int(profile.op_count("mac", 32)),
        "params": int(profile.weight_count()),
        "size_mib": profile.memory / 8 / 1024**2,
        "input_shape": list(model.input_shape[1:]),
        "output_shape": list(model.output_shape[1:]),
    }
