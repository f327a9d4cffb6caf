"""deepbasics: the classic first models of deep learning as Lightning + Hydra experiments."""

__version__ = "0.1.0"
