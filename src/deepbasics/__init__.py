"""deepbasics: the classic first models of deep learning as Lightning + Hydra experiments. Its Python API (``fit``,
``load_model``) imports torch only when called, so the console scripts' ``--help`` never does."""

from deepbasics.api import fit, load_model

__version__ = "0.1.0"
__all__ = ["fit", "load_model"]
