"""metrics.json and the end-of-run table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from deepbasics.config.settings import SPLITS
from deepbasics.files import atomic_write


def by_stage(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{"train/loss": t, ...} -> {"train": {"loss": t}, ...}, values as plain floats."""
    grouped: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        stage, sep, name = key.partition("/")
        if sep and stage in SPLITS:
            grouped.setdefault(stage, {})[name] = float(value)
    return {stage: dict(sorted(grouped[stage].items())) for stage in SPLITS if stage in grouped}


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic, so a reader never sees half a file; NaN/inf become null to stay valid JSON."""
    text = json.dumps(finite(payload), indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def finite(value: Any) -> Any:
    """``value`` as JSON holds it, NaN and infinities as None (JSON has neither; Python's json writes them anyway)."""
    return json.loads(json.dumps(value), parse_constant=lambda _: None)


def results_table(stages: dict[str, dict[str, float]]):
    """A rich Table: one row per metric, one column per stage."""
    from rich.table import Column, Table

    table = Table("metric", *(Column(stage, justify="right") for stage in stages))
    for name in sorted({name for values in stages.values() for name in values}):
        table.add_row(name, *(f"{values[name]:.6g}" if name in values else "" for values in stages.values()))
    return table


def optimum_line(optimum: dict) -> str:
    """One line for the end of a run: the best the model class can do, and the gap SGD left."""
    if "skipped" in optimum:
        return f"optimum: not computed ({optimum['skipped']})"
    if optimum.get("separable"):
        return f"optimum ({optimum['method']}): none, {optimum['note']}"
    weight = ", ".join(f"{w:.4g}" for w in optimum["weight"])
    return (
        f"optimum ({optimum['method']}): loss {optimum['loss']:.6g} at W [{weight}], b {optimum['bias']:.4g};"
        f" SGD is {optimum['loss_gap']:.4g} above it in loss, {optimum['param_gap']:.4g} away in parameters"
    )


def flat_settings(cfg) -> dict[str, Any]:
    """A run's settings, once and flat, for every logger: a part's class by its short name (``optimizer: SGD``),
    a list as one line of JSON; data.seed left out when it is the run's seed (``${seed}`` would repeat it)."""
    settings: dict[str, Any] = {"experiment": cfg.name, "seed": cfg.seed, "epochs": cfg.epochs}
    parts = [(group, cfg.model.get(group)) for group in ("net", "optimizer", "scheduler")] + [("data", cfg.data)]
    for prefix, values in parts:
        for key, value in (values or {}).items():
            skipped = key.startswith("_") or (prefix == "data" and key == "seed" and value == cfg.seed)
            if key == "_target_":
                settings[prefix] = str(value).rsplit(".", 1)[-1]
            elif not (skipped or value is None or hasattr(value, "items")):  # a nested part is not one setting
                if not isinstance(value, (int, float, str, bool)):
                    value = json.dumps(OmegaConf.to_container(value), separators=(",", ":"))
                settings[f"{prefix}.{key}"] = value
    return settings
