"""Several benchmark protocols in one go: the evaluation suite of the pipeline's evaluate step.

``evaluate_suite(embedder, entries, out_dir)`` runs each entry
(``vlrface.config.common.ProtocolEntry`` or a dict with its keys: ``name``, ``root``,
``resolutions``, ``files``, ``model``) through ``runners.run`` with a progress bar over the
protocols, and writes under ``out_dir``:

* ``eval/<protocol>/<figure>.png``: the figures ``reports.plots.protocol_figures`` draws from
  the runner's artifacts (ROC and DET of score sets, CMC curves, cross-resolution heatmaps);
* ``eval/<protocol>/metrics.json``: the protocol's metrics, the entry and the backend used.

It returns ``(metrics, figures)``: every metric under its stable name
``eval.<protocol>.<variant>.<res>.<metric>`` (exactly what ``runners.run`` returns), and
``{"eval/<protocol>/<file>.png": Path}``, so a caller logs ``out_dir/eval`` as the MLflow
artifact folder ``eval``.

Backends: ``embedder`` is one ``Embedder`` used for every entry, or a mapping
``{"keras": ..., "lce": ...}`` from which each entry's ``model`` picks. The runners take any
embedder, so the same code evaluates a Keras model and its LCE flatbuffer
(``embedders.LCEEmbedder``). The metric names do not say which backend produced them; the
backend is recorded in ``metrics.json`` (and the evaluate step logs it as a param).

Names known before a run (``known_metric_names``): LFW, TinyFace and ``identities``, whose names
depend only on the configured resolutions. SCface (cameras present), SurvFace, IJB-B/C (which
1:N figures the galleries allow) and VGGFace2-Pose (poses present) name metrics after what the
data holds, so configuration checks can only check their ``eval.<protocol>.`` prefix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from vlrface.data.records import DataError
from vlrface.progress import tqdm
from vlrface.protocols import runners
from vlrface.protocols.common import exp_suffix
from vlrface.protocols.identification import CLOSED_SET_RANKS

KNOWN_AHEAD = runners.KNOWN_AHEAD  # the protocols whose metric names the config fixes


def _field(entry, key: str, default=None):
    if isinstance(entry, Mapping):
        return entry.get(key, default)
    return getattr(entry, key, default)


def resolutions_of(entry) -> list[int]:
    """The entry's ``resolutions``, or its protocol's defaults when unset."""
    res = _field(entry, "resolutions")
    name = _field(entry, "name")
    return list(runners.DEFAULT_RESOLUTIONS[name] if res is None else res)


def known_metric_names(entry) -> list[str] | None:
    """The metric names ``evaluate_suite`` will return for ``entry`` when they depend on the
    configuration only (LFW, TinyFace), else ``None`` (they depend on the data)."""
    name, res = _field(entry, "name"), resolutions_of(entry)
    if name == "lfw":
        tar = f"tar_far_{exp_suffix(1e-3)}"
        return [
            f"eval.lfw.{variant}.{r}.{m}"
            for variant in ("hr_lr", "lr_lr")
            for r in res
            for m in ("acc", "acc_std", tar)
        ]
    if name == "tinyface":
        metrics = [f"rank{k}" for k in CLOSED_SET_RANKS] + ["mAP"]
        return [f"eval.tinyface.devkit.{r}.{m}" for r in ["native", *res] for m in metrics]
    if name == "identities":
        from vlrface.protocols.identities import metric_names

        return metric_names(res)
    return None


def _where(index: int, entry) -> str:
    return f"evaluation.protocols[{index}] ({_field(entry, 'name')})"


def entry_kwargs(entry, index: int = 0, *, flip=True, down="area", up="area", label=None) -> dict:
    """The keyword arguments of ``runners.run`` for ``entry`` (the one check of a protocol's
    root, alignment and files, for the configuration and ``vlrface evaluate``): ``KeyError``
    for an unknown protocol or a file that is not the protocol's, ``DataError`` naming the path
    when the root or a file does not exist or the entry asks a native low-resolution protocol
    to align. ``label(key)`` names a key in those errors (default:
    ``evaluation.protocols[<index>] (<name>).<key>``; the CLI names its options). A relative
    file path is under the entry's root."""
    name = _field(entry, "name")
    where = label or (lambda key: f"{_where(index, entry)}.{key}")
    if name not in runners.PROTOCOLS:
        raise KeyError(
            f"{where('name')}: unknown protocol {name!r}; "
            f"choose one of {', '.join(runners.PROTOCOLS)}"
        )
    root = Path(_field(entry, "root"))
    if not root.exists():
        raise DataError(f"{where('root')}: {root}: data root does not exist")
    kwargs = {"flip": flip, "down": down, "up": up, "resolutions": resolutions_of(entry)}
    align = _field(entry, "align", "auto") or "auto"
    if name in runners.ALIGNABLE:
        kwargs["align"] = align
    elif align not in ("auto", "none"):
        raise DataError(
            f"{where('align')}: {name} is native low resolution (no landmarks, too "
            f"small for the face detector): align must be auto or none, not {align}"
        )
    for key, value in (_field(entry, "files") or {}).items():
        if key not in runners.PROTOCOL_FILES[name]:
            raise KeyError(f"{where(f'files.{key}')}: not a file of {name}")
        path = Path(value) if Path(value).is_absolute() else root / value
        if not path.is_file():
            raise DataError(f"{where(f'files.{key}')}: {path}: file does not exist")
        kwargs[key] = str(path)
    return kwargs


def _pick(embedder, backend: str, index: int, entry):
    if not isinstance(embedder, Mapping):
        return embedder
    if backend not in embedder:
        raise KeyError(f"{_where(index, entry)}.model: no {backend!r} embedder given")
    return embedder[backend]


def evaluate_suite(
    embedder,
    entries: Iterable,
    out_dir,
    *,
    model_label: str = "model",
    flip: bool = True,
    down: str = "area",
    up: str = "area",
    progress: bool = True,
) -> tuple[dict[str, float], dict[str, Path]]:
    """Run every entry's protocol; ``(metrics, {artifact path: figure file})`` (module doc)."""
    import matplotlib.pyplot as plt

    from vlrface.reports.plots import protocol_figures

    entries = list(entries)
    out_dir = Path(out_dir)
    # check every root and file first: a typo in the last entry fails before hours of embedding
    kwargs = [entry_kwargs(e, i, flip=flip, down=down, up=up) for i, e in enumerate(entries)]
    metrics: dict[str, float] = {}
    figures: dict[str, Path] = {}
    bar = tqdm(entries, desc="protocols", unit="protocol", disable=not progress)
    for i, (entry, kw) in enumerate(zip(bar, kwargs, strict=True)):
        name, backend = _field(entry, "name"), _field(entry, "model", "keras") or "keras"
        bar.set_postfix_str(name)
        found, artifacts = runners.run(
            name, _pick(embedder, backend, i, entry), _field(entry, "root"), progress=progress, **kw
        )
        found = {k: float(v) for k, v in found.items()}
        clash = sorted(set(found) & set(metrics))
        if clash:
            raise ValueError(f"{_where(i, entry)}: metric {clash[0]} already given by an entry")
        metrics.update(found)
        folder = out_dir / "eval" / name
        folder.mkdir(parents=True, exist_ok=True)
        for fig_name, fig in protocol_figures(name, artifacts, model_label).items():
            path = folder / Path(fig_name).name
            fig.savefig(path, dpi=110)
            plt.close(fig)
            figures[f"eval/{name}/{path.name}"] = path
        if "alignment" in artifacts:
            from vlrface.protocols.common import alignment_line

            tqdm.write(f"{name} alignment: {alignment_line(artifacts['alignment'])}")
        record = {
            "alignment": artifacts.get("alignment"),
            "protocol": name,
            "root": str(_field(entry, "root")),
            "model": backend,
            "resolutions": kw["resolutions"],
            "files": {k: v for k, v in kw.items() if k in runners.PROTOCOL_FILES[name]},
            "metrics": found,
        }
        (folder / "metrics.json").write_text(json.dumps(record, indent=2))
    bar.close()
    return metrics, figures
