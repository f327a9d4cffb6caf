"""deepbasics: the classic first models of deep learning as Lightning + Hydra experiments.

``deepbasics.fit`` and ``deepbasics.load_model`` (the Python API, ``deepbasics.api``) load on first use,
so the console scripts' ``--help`` and config errors never import torch."""

__version__ = "0.1.0"
__all__ = ["fit", "load_model"]


def __getattr__(name: str):
    if name in __all__:
        from deepbasics.api import fit, load_model

        return {"fit": fit, "load_model": load_model}[name]
    raise AttributeError(f"module 'deepbasics' has no attribute {name!r}")
