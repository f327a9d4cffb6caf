"""deepbasics: the classic first models of deep learning as Lightning + Hydra experiments. Its Python API
(``fit``, ``load_model``) loads on first use, so the console scripts' ``--help`` never imports torch."""

__version__ = "0.1.0"
__all__ = ["fit", "load_model"]


def __getattr__(name: str):
    if name in __all__:
        import deepbasics.api

        return getattr(deepbasics.api, name)
    raise AttributeError(f"module 'deepbasics' has no attribute {name!r}")
