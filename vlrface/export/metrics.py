"""What each export format records: one table per format, read by every place that needs it.

An export step logs its format's figures as MLflow metrics (``export.<format>.<key>``); the
registration step copies them onto the version as ``metric.export.<format>.<key>`` tags (so a
cached export loses none of them); promotion reads the format's parity metric against the
policy's ``parity.cosine_min``; the model card lists the figures of the version's own format.
Adding a format, or a figure to one, is one entry here.

A version says its format in the ``model.format`` tag; versions registered before the tag
existed are recognised by the parity metric they carry (``format_of``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Figure:
    """One recorded figure: ``export.<format>.<key>``, its model-card label, and where it comes
    from: a path into the export report (``census``/``parity``) or the latency report."""

    key: str
    label: str
    path: tuple[str, ...]
    report: Literal["export", "latency"] = "export"
    default: float | None = None  # when an older report lacks it


@dataclass(frozen=True)
class ExportFormat:
    name: str  # lce | onnx: the metric prefix and the ``model.format`` tag
    title: str  # the model card's heading
    suffix: str  # the exported file's suffix
    figures: tuple[Figure, ...]

    def metric(self, key: str) -> str:
        return f"export.{self.name}.{key}"

    @property
    def parity_metric(self) -> str:
        """The cosine floor a promotion policy's ``parity.cosine_min`` applies to."""
        return self.metric("parity.cosine_min")

    @property
    def names(self) -> list[str]:
        return [self.metric(f.key) for f in self.figures]

    def metrics(self, export_report: dict, latency_report: dict | None = None) -> dict:
        """``{export.<format>.<key>: value}`` from the export report (and the latency report,
        for the figures that live there; left out without it)."""
        reports = {"export": export_report, "latency": latency_report}
        out = {}
        for f in self.figures:
            node = reports[f.report]
            if node is None:
                continue
            for part in f.path:
                node = node.get(part) if isinstance(node, dict) else None
            value = f.default if node is None else node
            if value is not None:
                out[self.metric(f.key)] = value
        return out


def parity_figures(pair: str) -> tuple[Figure, Figure]:
    """The parity figures every format records (``vlrface.export.parity``), ``pair`` naming the
    two runtimes compared on the model card."""
    return (
        Figure("parity.cosine_min", f"parity cosine min ({pair})", ("parity", "cosine_min")),
        Figure("parity.max_abs_diff", "parity max abs diff", ("parity", "max_abs_diff")),
    )


LCE = ExportFormat(
    "lce",
    "LCE flatbuffer",
    ".tflite",
    (
        Figure("binary_macs", "binary MACs", ("census", "binary_macs")),
        Figure("float_macs", "float MACs", ("census", "float_macs")),
        Figure("binary_mac_share", "binary_mac_share", ("census", "binary_mac_share")),
        Figure("size_bytes", "flatbuffer size (bytes)", ("census", "size_bytes")),
        Figure("int8_ops", "int8 ops", ("census", "int8_ops"), default=0),
        *parity_figures("Keras vs LCE"),
    ),
)
ONNX = ExportFormat(
    "onnx",
    "ONNX model",
    ".onnx",
    (
        Figure("params", "parameters", ("census", "params")),
        Figure("nodes", "graph nodes", ("census", "nodes")),
        Figure("size_bytes", "ONNX size (bytes)", ("census", "size_bytes")),
        *parity_figures("PyTorch vs onnxruntime"),
        Figure(
            "host_ms",
            "host latency (ms, onnxruntime, 1 thread; not a device figure)",
            ("host", "ms"),
            report="latency",
        ),
    ),
)
FORMATS = {f.name: f for f in (LCE, ONNX)}
FORMAT_TAG = "model.format"


def get(name: str) -> ExportFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown export format {name!r}; known: {', '.join(FORMATS)}") from None


def format_of(tags: dict, values: dict | None = None) -> ExportFormat | None:
    """A version's export format: its ``model.format`` tag, else the one format whose parity
    metric it records (``values``: metric name -> value; default: its ``metric.*`` tags)."""
    if tags.get(FORMAT_TAG) in FORMATS:
        return FORMATS[tags[FORMAT_TAG]]
    if values is None:
        values = {k[len("metric.") :]: v for k, v in tags.items() if k.startswith("metric.")}
    found = [f for f in FORMATS.values() if f.parity_metric in values]
    return found[0] if len(found) == 1 else None
