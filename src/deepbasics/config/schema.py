"""The typed schema of a training config, checked before torch or Lightning load, so a mistake answers
in well under a second with one line that names the key and the fix.

The user speaks in tutorial epochs, and so does ``Schedule``; ``trainer_kwargs`` turns it into Lightning's
own loop settings. With full batches (the tutorials) a tutorial epoch is one optimizer step, so
``global_step`` counts tutorial epochs, and one Lightning epoch holds the ``val_every`` steps up to the next
validation (``data.in_memory``): validation, checkpoints and the console line fall on Lightning's epoch ends.
With ``data.batch_size`` a tutorial epoch is a Lightning epoch, one pass over shuffled slices."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from deepbasics.errors import ConfigError

SPLITS = ("train", "val", "test")  # data splits, and the metric stages named after them
# The least-squares optimum's tags (linear and logistic tutorials) sit in the train group beside
# train/loss, as they describe the training split; the figures sit in a group after val. Dashboards
# that sort groups by name and open the first two (TensorBoard) then open on the curves.
OPTIMUM_LOSS, LOSS_GAP, PARAM_GAP = "train/optimum_loss", "train/loss_gap", "train/param_gap"
FIGURE_TAGS = {"fit": "visual/fit", "confusion": "visual/confusion"}
NET_NAMES = ("LinearRegression", "LogisticRegression", "NeuralNet")
OPTIMIZER_NAMES = ("sgd", "adam")


def _positive_int(key: str, value: Any, unit: str = "") -> None:
    _integer(1, what=unit)(key, value)


@dataclass(frozen=True)
class Schedule:
    epochs: int
    log_every: int
    val_every: int
    ckpt_every: int

    def __post_init__(self) -> None:
        for f in fields(self):
            _positive_int(f.name, getattr(self, f.name), " (counted in full-batch epochs)")
        if self.val_every % self.log_every:
            raise ConfigError(f"val_every={self.val_every} must be a multiple of log_every={self.log_every}")
        if self.ckpt_every % self.val_every:
            raise ConfigError(
                f"ckpt_every={self.ckpt_every} must be a multiple of val_every={self.val_every}"
                " (the best checkpoint is chosen on fresh validation metrics)"
            )

    @classmethod
    def of(cls, cfg: DictConfig) -> Schedule:
        return cls(epochs=cfg.epochs, log_every=cfg.log_every, val_every=cfg.val_every, ckpt_every=cfg.ckpt_every)

    def trainer_kwargs(self, steps_per_epoch: int | None, resumed: tuple[int, int] = (0, 0)) -> dict:
        """The Trainer's own schedule: its epoch limit, the validation interval and the logging interval
        (in optimizer steps, so ``log_every`` tutorial epochs). ``steps_per_epoch``: None for full batches
        (one step per tutorial epoch, ``val_every`` of them per Lightning epoch), else the batches of a pass.
        ``resumed``: (Lightning epochs finished, global_step) of the checkpoint a run continues from."""
        if steps_per_epoch is None:
            # A Lightning epoch ends at every multiple of val_every and at the last epoch, so a run that
            # ended between multiples (epochs=301) and is extended has one Lightning epoch more.
            finished, step = resumed
            left = -(-self.epochs // self.val_every) - step // self.val_every
            return {"max_epochs": finished + left, "check_val_every_n_epoch": 1, "log_every_n_steps": self.log_every}
        return {
            "max_epochs": self.epochs,
            "check_val_every_n_epoch": self.val_every,
            "log_every_n_steps": self.log_every * steps_per_epoch,
        }


@dataclass(frozen=True)
class NetSpec:
    """A net as plain values, the form saved in checkpoints.

    ``init`` is ``"default"`` (PyTorch's init), ``"zeros"``, or a mapping from parameter name to values;
    the single-layer nets also accept ``weight``/``bias`` for ``linear.weight``/``linear.bias``.
    """

    name: str
    in_features: int | None = None  # None: from the data, filled in before the net is built (run.build)
    hidden_size: int | None = None
    out_features: int = 1  # one logit per class for a multi-class classifier
    init: Any = field(default="default")

    def __post_init__(self) -> None:
        if self.name not in NET_NAMES:
            raise ConfigError(f"unknown net '{self.name}': model.net.name must be one of {', '.join(NET_NAMES)}")
        if self.in_features is not None:
            _positive_int("model.net.in_features", self.in_features)
        if self.name == "NeuralNet":
            _positive_int("model.net.hidden_size", self.hidden_size)
        _positive_int("model.net.out_features", self.out_features)
        if self.name == "LinearRegression" and self.out_features != 1:
            raise ConfigError("model.net.out_features is 1 for LinearRegression (one target value): remove it")
        if not (self.init in ("default", "zeros") or isinstance(self.init, dict)):
            raise ConfigError(
                f"model.net.init={self.init!r}: use default, zeros, or a mapping like {{weight: [[4.0]], bias: [1.0]}}"
            )

    @staticmethod
    def applicable(spec: dict) -> dict:
        """``spec`` without the size keys its net does not have: a NeuralNet config's hidden_size stays
        behind when model.net.name switches it to a single layer (model=multiclass net.name=...)."""
        if spec.get("name") != "NeuralNet":
            return {k: v for k, v in spec.items() if k != "hidden_size"}
        return dict(spec)

    @classmethod
    def of(cls, spec: dict) -> NetSpec:
        try:
            return cls(**cls.applicable(spec))
        except TypeError as err:  # an unknown or missing field
            raise ConfigError(f"model.net: {err}") from None


@dataclass(frozen=True)
class OptimizerSpec:
    """``name`` and ``lr``; any other key goes to the torch optimizer as it is (momentum, betas, ...)."""

    name: str = "sgd"
    lr: float = 0.01
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZER_NAMES:
            raise ConfigError(
                f"unknown optimizer '{self.name}': model.optimizer.name must be one of {', '.join(OPTIMIZER_NAMES)}"
            )
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ConfigError(f"model.optimizer.lr={self.lr!r} must be a positive number")

    @classmethod
    def of(cls, spec: dict) -> OptimizerSpec:
        options = dict(spec)
        return cls(name=options.pop("name", "sgd"), lr=options.pop("lr", None), options=options)


def require_values(cfg: DictConfig) -> None:
    """Keys left as ??? in the config must come from the command line."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{', '.join(missing)} must be set: pass {missing[0]}=<value> on the command line")


# Trainer arguments a run sets itself, with the setting that says what the user wants instead: set under
# trainer., they would be overridden or would break the tutorial-epoch schedule, so they are refused.
SET_BY_THE_RUN = {
    "max_epochs": "pass epochs=<tutorial epochs> instead",
    "max_steps": "pass epochs=<tutorial epochs> instead",
    "check_val_every_n_epoch": "pass val_every=<epochs> instead",
    "val_check_interval": "pass val_every=<epochs> instead",
    "log_every_n_steps": "pass log_every=<epochs> instead",
    "limit_train_batches": "pass epochs=<tutorial epochs> (or overfit_rows=<rows>) instead",
    "accumulate_grad_batches": "pass data.batch_size=<rows per step> instead",
    "overfit_batches": "pass overfit_rows=<rows> instead",
    "fast_dev_run": "pass debug=fast instead",
    "enable_progress_bar": "pass progress=bar or progress=lines instead",
    "enable_checkpointing": "pass callbacks=none instead",
    "callbacks": "pick them with callbacks=<group> or set callbacks.<name>.<option>=... instead",
    "logger": "pick them with logger=<group> instead",
    "default_root_dir": "pass paths.output_dir=<dir> instead",
    "plugins": "remove it (checkpoints are written through the run's own CheckpointIO)",
}


def refuse_run_settings(trainer) -> None:
    """Trainer arguments the run derives from its own keys are refused, never silently overridden."""
    for key in trainer or ():
        if key in SET_BY_THE_RUN:
            raise ConfigError(f"trainer.{key} is set by the run itself; {SET_BY_THE_RUN[key]}")


# --- the user-facing values: each key's type and range, checked where the config has the key
SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range


def _integer(low: int | None = None, high: int | None = None, what: str = ""):
    """A rule: an integer (not a bool) from ``low`` to ``high``; ``what`` says what it counts."""
    if low == 1 and high is None:
        bounds = "a positive integer"
    elif high is not None:
        bounds = f"an integer from {low} to {high}"
    else:
        bounds = "an integer" if low is None else f"an integer of {low} or more"

    def check(key: str, value: Any) -> None:
        wrong = isinstance(value, bool) or not isinstance(value, int)
        if wrong or (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(f"{key}={value!r} must be {bounds}{what}")

    return check


def _number(low: float, below: float | None = None, low_open: bool = False, what: str = ""):
    def check(key: str, value: Any) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
        ok = ok and (value > low if low_open else value >= low) and (below is None or value < below)
        if not ok:
            if below is not None:
                bounds = f"from {low} up to (not including) {below}"
            else:
                bounds = f"above {low}" if low_open else f"{low} or more"
            raise ConfigError(f"{key}={value!r} must be a number {bounds}{what}")

    return check


def _boolean(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false")


def _text(what: str):
    def check(key: str, value: Any) -> None:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}={value!r} must be {what}")

    return check


def _choice(*options: str):
    def check(key: str, value: Any) -> None:
        if value not in options:
            raise ConfigError(f"{key}={value!r}: use {', '.join(options[:-1])} or {options[-1]}")

    return check


def _optional(rule):
    def check(key: str, value: Any) -> None:
        if value is not None:
            rule(key, value)

    return check


_SEED = _integer(0, SEED_MAX)
_FRACTION = _number(0, 1, what=" (a share of the rows)")
VALUE_RULES = {
    "seed": _SEED,
    "data.seed": _SEED,
    "data.val_fraction": _FRACTION,
    "data.test_fraction": _FRACTION,
    "data.header": _boolean,
    "data.standardize": _boolean,
    "data.encoding": _text("an encoding's name, e.g. utf-8, cp949, latin-1"),
    "data.batch_size": _optional(_integer(1, what=" (rows per step), or null for full batches")),
    "data.label_column": _integer(),
    "data.n_train": _integer(1, what=" (rows)"),
    "data.n_val": _integer(0, what=" (rows; 0: no val split)"),
    "data.n_test": _integer(0, what=" (rows; 0: no test split)"),
    "data.cluster_std": _number(0, low_open=True),
    "overfit_rows": _optional(_integer(1, what=" (training rows), or null")),
    "optimum_max_rows": _integer(0),
    "threads": _integer(1, what=" (CPU threads)"),
    "dry_run": _boolean,
    "progress": _choice("auto", "bar", "lines"),
    "monitor.mode": _choice("min", "max"),
    "model.num_classes": _optional(_integer(2, what=" (classes)")),
}
# Options with a range of Lightning's EarlyStopping and ModelCheckpoint, wherever cfg.callbacks has one
CHECKED_CALLBACKS = ("EarlyStopping", "ModelCheckpoint")
CALLBACK_RULES = {
    "patience": _integer(0, what=" (validations without improvement)"),
    "min_delta": _number(0),
    "mode": _choice("min", "max"),
    "save_top_k": _integer(-1, what=" (-1 keeps every checkpoint)"),
    "verbose": _boolean,
    "check_finite": _boolean,
}
_ABSENT = object()


def check_values(cfg: DictConfig) -> None:
    """Each user-facing value of the schema: its type, its range, and its relation to the others."""
    for key, rule in VALUE_RULES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT:
            rule(key, value)
    val, test = (OmegaConf.select(cfg, f"data.{k}_fraction", default=0) or 0 for k in ("val", "test"))
    if val + test >= 1:
        raise ConfigError(
            f"data.val_fraction={val} and data.test_fraction={test} leave no rows to train on; keep their sum below 1"
        )
    for name, conf in (cfg.get("callbacks") or {}).items():
        if not (OmegaConf.is_dict(conf) and str(conf.get("_target_", "")).endswith(CHECKED_CALLBACKS)):
            continue
        for option, rule in CALLBACK_RULES.items():
            if conf.get(option) is not None:
                rule(f"callbacks.{name}.{option}", conf[option])


def validate_train_config(cfg: DictConfig) -> None:
    """Every check that needs no data and no torch."""
    require_values(cfg)
    check_values(cfg)
    schedule = Schedule.of(cfg)
    every = cfg.get("figure_every", 0)
    if isinstance(every, bool) or not isinstance(every, int) or every < 0 or every % schedule.val_every:
        raise ConfigError(f"figure_every={every!r} must be 0 (off) or a multiple of val_every={schedule.val_every}")
    model = OmegaConf.to_container(cfg.model, resolve=True)
    NetSpec.of(model.get("net", {}))
    OptimizerSpec.of(model.get("optimizer", {}))
    refuse_run_settings(cfg.get("trainer"))
