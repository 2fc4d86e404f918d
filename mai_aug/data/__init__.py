"""Data in: dataset adapters (NIH ChestX-ray14, CheXpert, a generic CSV), patient-wise splits, the synthetic phantom,
image checks, and the image store every run reads."""

from mai_aug.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "DataSource": "datasets", "DatasetTable": "datasets", "read_dataset": "datasets", "FINDINGS": "nih",
    "NIHTable": "nih", "read_nih": "nih", "label_frequencies": "split", "make_datalist": "split",
    "write_datalist": "split", "load_datalist": "split", "split_data": "prepare", "PhantomSpec": "phantom",
    "write_phantom": "phantom", "build_dataset": "loader", "StoreDataset": "loader", "ImageStore": "store",
    "ensure_store": "store_build", "check_datalist_images": "images",
})
