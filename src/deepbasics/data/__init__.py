"""The project's DataModules: splits held in memory (``in_memory``), from inline values (``toy``), make_blobs
(``blobs``) or a CSV file (``csv_file``). Configs name them as ``deepbasics.data.<Class>``; any other
LightningDataModule serves as ``data`` the same way."""

from deepbasics.data.blobs import BlobsDataModule
from deepbasics.data.csv_file import CSVDataModule
from deepbasics.data.in_memory import InMemoryDataModule, Standardize, whole_splits
from deepbasics.data.toy import ToyDataModule

__all__ = ["BlobsDataModule", "CSVDataModule", "InMemoryDataModule", "Standardize", "ToyDataModule", "whole_splits"]
