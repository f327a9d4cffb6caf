"""The DataModules: in-memory splits served to Lightning's loop (``in_memory``), from inline values (``toy``),
make_blobs (``blobs``) or a CSV file (``csv_file``). The configs name them here, as ``deepbasics.data.<Class>``."""

from deepbasics.data.blobs import BlobsDataModule
from deepbasics.data.csv_file import CSVDataModule
from deepbasics.data.in_memory import FullBatchDataModule, StackedSplits, Standardize
from deepbasics.data.toy import ToyDataModule

__all__ = ["BlobsDataModule", "CSVDataModule", "FullBatchDataModule", "StackedSplits", "Standardize", "ToyDataModule"]
