"""Saliency: Grad-CAM maps, the pointing game against boxes, and its study section."""
