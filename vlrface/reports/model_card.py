"""A Markdown model card per registered version: data, training, metrics, efficiency, latency,
gates and the promotion decision, every figure as recorded on the version.

``render`` is pure: it takes what ``vlrface.registry.card_inputs`` collects (the version's tags,
its run's metrics and params, the pipeline configuration) and returns Markdown.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from vlrface.export.metrics import FORMATS, format_of

# the training settings a reader needs first; the config hash pins all the others
KEY_SETTINGS = (
    "model.name",
    "model.channels",
    "model.embedding",
    "model.pretrained",
    "pretrain.epochs",
    "pretrain.batch_size",
    "pretrain.lr",
    "finetune.epochs",
    "finetune.batch_size",
    "finetune.lr",
    "finetune.degrade.probability",
    "evaluation.resolutions",
    "evaluation.pairs",
    "evaluation.folds",
    "export.int8",
    "export.parity_min_cosine",
)


def _num(x) -> str:
    if x is None or x == "":
        return "-"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if f.is_integer() and abs(f) >= 1000:
        return f"{int(f):,}"
    return f"{f:.6g}"


def _cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out + [""]


def _lookup(config: dict | None, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _values(info: dict) -> dict[str, float]:
    """Metrics: the version's ``metric.*`` tags, completed by its run's metrics."""
    values = {}
    for k, v in info.get("run_metrics", {}).items():
        values[k] = v
    for k, v in info.get("tags", {}).items():
        if k.startswith("metric."):
            values[k[len("metric.") :]] = v
    return values


def render(info: dict, decision: dict | None = None) -> str:
    """The card. ``decision`` (``Decision.as_dict()`` plus optional ``at``) overrides the
    decision recorded in the tags (the pipeline renders before it tags)."""
    tags = info.get("tags", {})
    name, version = info.get("name", "?"), info.get("version", "?")
    values = _values(info)
    lines = [f"# Model card: {name} v{version}", ""]
    created = info.get("created")
    when = (
        datetime.fromtimestamp(created / 1000, UTC).isoformat(timespec="seconds")
        if created
        else "-"
    )
    lines += [
        f"- aliases: {', '.join(info.get('aliases') or []) or '-'}",
        f"- registered: {when}",
        f"- MLflow run: {info.get('run_id') or '-'}",
    ]
    if info.get("description"):
        lines.append(f"- description: {info['description']}")
    lines.append("")
    synthetic = tags.get("data.synthetic", "unknown")
    if synthetic == "true":
        lines += [
            "> **Trained and evaluated on SYNTHETIC demo data.** The figures below say nothing "
            "about accuracy on real faces.",
            "",
        ]

    lines += ["## Data", ""]
    lines += _table(
        ("field", "value"),
        [
            ("dataset", tags.get("data.dataset", "-")),
            ("DVC md5", tags.get("dvc_md5", "-")),
            ("synthetic", synthetic),
        ],
    )

    lines += ["## Training", ""]
    git = tags.get("git_sha", "-")
    if tags.get("git_dirty") == "true":
        git += " (dirty working tree)"
    rows = [
        ("config hash (sha256)", tags.get("config_hash", "-")),
        ("seed", tags.get("seed", "-")),
        ("git", git),
    ]
    config, params = info.get("config"), info.get("run_params", {})
    for key in KEY_SETTINGS:
        value = _lookup(config, key) if config else params.get(key)
        if value is not None:
            rows.append((key, json.dumps(value) if isinstance(value, list | dict) else value))
    lines += _table(("setting", "value"), rows)

    lines += ["## Metrics", ""]
    evals = sorted(k for k in values if k.startswith("eval."))
    if evals:
        lines += _table(("metric", "value"), [(k, _num(values[k])) for k in evals])
    else:
        lines += ["no evaluation metrics recorded", ""]

    lines += ["## Efficiency", ""]
    # the figures of the version's own format; a version that records none says so
    fmt = format_of(tags, values)
    formats = [fmt] if fmt else [f for f in FORMATS.values() if set(f.names) & set(values)]
    if not formats:
        lines += ["no export figures recorded", ""]
    for f in formats:
        rows = [(fig.label, _num(values.get(f.metric(fig.key)))) for fig in f.figures]
        lines += [f"{f.title} (`export.{f.name}.*`):", ""] + _table(("figure", "value"), rows)

    lines += ["## Latency", ""]
    devices = sorted(
        {
            k[len("latency.") :].rsplit(".", 1)[0]
            for k in tags
            if k.startswith("latency.")
            and k.endswith((".ms", ".budget_ms", ".source"))
            and k.count(".") >= 2
        }
    )
    rows = []
    for dev in devices:
        ms = tags.get(f"latency.{dev}.ms", values.get(f"latency.{dev}.ms"))
        budget = tags.get(f"latency.{dev}.budget_ms", values.get(f"latency.{dev}.budget_ms"))
        source = tags.get(f"latency.{dev}.source", tags.get("latency.source", "unknown"))
        within = "-" if ms is None or budget is None else float(ms) <= float(budget)
        rows.append((dev, _num(ms), _num(budget), source, within))
    if rows:
        lines += _table(("device", "ms", "budget ms", "source", "within budget"), rows)
        lines += [
            "`estimated`: predicted by the ARM cost model from the flatbuffer's ops; "
            "`emulated`: aarch64 instructions counted under qemu-user; "
            "`measured`: run on the device.",
            "",
        ]
    else:
        lines += ["no latency recorded", ""]

    lines += ["## Gates", ""]
    gates = sorted((k[len("gate.") :], v) for k, v in tags.items() if k.startswith("gate."))
    lines += _table(("gate", "result"), gates) if gates else ["no gates recorded", ""]

    lines += ["## Promotion decision", ""]
    d = decision
    if d is None and "promotion.decision" in tags:
        d = {
            "decision": tags["promotion.decision"],
            "reasons": json.loads(tags.get("promotion.reasons", "[]")),
            "rules": json.loads(tags.get("promotion.rules", "[]")),
            "at": tags.get("promotion.at"),
            "by": tags.get("promotion.by"),
            "champion_version": tags.get("promotion.champion_before") or None,
            "policy": (
                json.loads(tags["promotion.policy"]).get("source")
                if tags.get("promotion.policy")
                else None
            ),
        }
    if d is None:
        lines += ["not decided yet", ""]
    else:
        lines += [
            f"- decision: **{d.get('decision', '-')}**",
            f"- at: {d.get('at') or '-'} by {d.get('by') or '-'}",
            f"- champion at the time: "
            f"{'v' + str(d['champion_version']) if d.get('champion_version') else 'none'}",
            f"- policy: {d.get('policy') or '-'}",
            "",
        ]
        rules = d.get("rules") or []
        if rules:
            lines += _table(
                ("rule", "result", "challenger", "champion", "threshold", "reason"),
                [
                    (
                        r["rule"],
                        "pass" if r["passed"] else "FAIL",
                        _num(r.get("challenger")),
                        _num(r.get("champion")),
                        _num(r.get("threshold")),
                        r["reason"],
                    )
                    for r in rules
                ],
            )
        else:
            lines += [f"- {r}" for r in d.get("reasons", [])] + [""]

    files = sorted((k[len("sha256.") :], v) for k, v in tags.items() if k.startswith("sha256."))
    if files:
        lines += ["## Files", ""] + _table(("file", "sha256"), files)
    pkgs = sorted((k[len("pkg.") :], v) for k, v in tags.items() if k.startswith("pkg."))
    if pkgs:
        lines += ["## Packages", ""] + _table(("package", "version"), pkgs)
    return "\n".join(lines).rstrip() + "\n"
