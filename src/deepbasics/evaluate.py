"""`python -m deepbasics.evaluate`: the module form of deepbasics-evaluate."""

from deepbasics.cli.commands import evaluate

if __name__ == "__main__":
    evaluate()
