"""`python -m deepbasics.train` (and `torchrun ... -m deepbasics.train`): the module form of deepbasics-train."""

from deepbasics.cli.commands import train

main = train  # the console script's entry point before the cli/ package: older installs still start

if __name__ == "__main__":
    train()
