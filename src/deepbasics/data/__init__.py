"""The DataModules: in-memory splits served as full batches (``in_memory``), from inline values (``toy``),
make_blobs (``blobs``) or a CSV file (``csv_file``). The configs name them here, as ``deepbasics.data.<Class>``."""

from deepbasics.data.blobs import BlobsDataModule
from deepbasics.data.csv_file import CSVDataModule
from deepbasics.data.in_memory import FullBatch, FullBatchDataModule, Standardize
from deepbasics.data.toy import ToyDataModule

__all__ = ["BlobsDataModule", "CSVDataModule", "FullBatch", "FullBatchDataModule", "Standardize", "ToyDataModule"]
