"""`python -m deepbasics.train` (and `torchrun ... -m deepbasics.train`): the module form of deepbasics-train."""

from deepbasics.cli.commands import train

if __name__ == "__main__":
    train()
