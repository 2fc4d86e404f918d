"""Networks: the families training supports, their specs, building and pretrained weights."""
