"""`python -m deepbasics.predict`: the module form of deepbasics-predict."""

from deepbasics.cli.commands import predict

if __name__ == "__main__":
    predict()
