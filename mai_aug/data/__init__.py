"""Data in: the NIH ChestX-ray14 layout, patient-wise splits and the synthetic chest phantom."""

from mai_aug.data.nih import FINDINGS, NIHTable, read_nih
from mai_aug.data.split import label_frequencies, make_datalist, write_datalist

__all__ = ["FINDINGS", "NIHTable", "read_nih", "label_frequencies", "make_datalist", "write_datalist"]
