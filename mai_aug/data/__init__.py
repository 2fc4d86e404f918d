"""Data in: dataset adapters (NIH ChestX-ray14, CheXpert, a generic CSV), patient-wise splits, the synthetic phantom."""

from mai_aug.data.datasets import DatasetTable, DataSource, read_dataset
from mai_aug.data.nih import FINDINGS, NIHTable, read_nih
from mai_aug.data.split import label_frequencies, make_datalist, write_datalist

__all__ = ["DataSource", "DatasetTable", "read_dataset", "FINDINGS", "NIHTable", "read_nih", "label_frequencies", "make_datalist", "write_datalist"]
