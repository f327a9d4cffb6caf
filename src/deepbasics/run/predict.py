"""`deepbasics-predict`: the plain net rebuilt from a checkpoint with torch alone (no Lightning), the way
the tutorials reload model.pt, and one line of JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from deepbasics.data.csv_file import read_table
from deepbasics.data.in_memory import Standardize, check_finite
from deepbasics.errors import ConfigError, one_line
from deepbasics.models.lightning_modules import predictions
from deepbasics.reports.metrics import finite
from deepbasics.run.checkpoints import read_checkpoint


def predict(cfg: DictConfig) -> list:
    """Probabilities (binary classifiers) or values (regression) for each input row, as one line of JSON;
    a multi-class classifier gives each row's class and its probabilities of every class."""
    torch.set_num_threads(cfg.threads)
    checkpoint = read_checkpoint(cfg.ckpt_path)
    x = read_inputs(cfg.inputs, checkpoint["hyper_parameters"]["net"].get("in_features"))
    answer = answers(net_of(checkpoint), x, checkpoint["deepbasics"]["classifier"])
    # JSON has no NaN or Infinity (Python's json writes them anyway): a value the net could not give is null
    print(json.dumps(finite(answer), allow_nan=False), flush=True)
    return answer["predictions"]


def ask(module, question, standardization: dict | None = None) -> dict:
    """A module's answers to ``question`` (rows as predict's inputs, raw), as the tutorials end on ``model(x)``."""
    x = read_inputs(question, module.hparams.net.get("in_features"), key="question")
    return {"inputs": question} | answers(scaled(module.net, standardization), x, module.is_classifier, "question")


def answers(net: torch.nn.Module, x: torch.Tensor, classifier: bool, key: str = "inputs") -> dict:
    """The net's predictions for the rows ``x``; a multi-class classifier's each row's class and every probability."""
    try:
        with torch.no_grad():
            values = predictions(net(x), classifier)
    except RuntimeError as err:  # a net of the user's own, whose input width the config does not say
        raise ConfigError(f"{key} of shape {'x'.join(map(str, x.shape))} do not fit the net: {one_line(err)}") from None
    if values.shape[1] > 1:  # one probability per class
        return {"predictions": values.argmax(dim=1).tolist(), "probabilities": values.tolist()}
    return {"predictions": values[:, 0].tolist()}


def net_of(checkpoint: dict) -> torch.nn.Module:
    """The trained net of a checkpoint in eval mode, taking raw rows."""
    net = instantiate(checkpoint["hyper_parameters"]["net"])
    state = checkpoint["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    return scaled(net, checkpoint["deepbasics"].get("standardization")).eval()


def scaled(net: torch.nn.Module, standardization: dict | None) -> torch.nn.Module:
    """The net behind the standardization its inputs were trained at, if any: it takes raw rows."""
    return net if standardization is None else torch.nn.Sequential(Standardize(standardization), net)


def read_inputs(inputs, width: int | None, key: str = "inputs") -> torch.Tensor:
    """Rows from an inline list (``[[2, 2], [5, 4]]``; ``[1, 2, 3]``: one feature) or a numeric CSV without labels."""
    if isinstance(inputs, str):
        path = Path(inputs).expanduser()
        if not path.is_file():
            raise ConfigError(f"{key}={inputs}: no such file; pass a CSV path or a list like [[2,2],[5,4]]")
        rows = read_table(str(path), ",", header=None, encoding="utf-8-sig", key=key, settings=False)
    else:
        values = OmegaConf.to_container(inputs) if OmegaConf.is_config(inputs) else inputs
        try:
            rows = np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={values!r}: give numbers, one list per row, e.g. [[2,2],[5,4]]") from None
        if rows.ndim < 2:  # one number, or one row (one feature per row for a model of one)
            rows = rows.reshape(-1, 1) if width == 1 else np.atleast_2d(rows)
    if rows.ndim != 2 or rows.shape[1] != (width or rows.shape[1]) or len(rows) == 0:
        shape = "x".join(map(str, rows.shape))
        raise ConfigError(f"{key} of shape {shape}: the model takes rows of {width} features; give N x {width}")
    check_finite(rows, key, "every input must be a finite number")
    return torch.from_numpy(rows)
