"""The DataModules: splits in memory (``in_memory``), from inline values (``toy``), make_blobs (``blobs``) or a CSV file
(``csv_file``); configs name ``deepbasics.data.<Class>``, or any LightningDataModule."""

from deepbasics.data.blobs import BlobsDataModule
from deepbasics.data.csv_file import CSVDataModule
from deepbasics.data.in_memory import InMemoryDataModule, Standardize, whole_splits
from deepbasics.data.toy import ToyDataModule

__all__ = ["BlobsDataModule", "CSVDataModule", "InMemoryDataModule", "Standardize", "ToyDataModule", "whole_splits"]
