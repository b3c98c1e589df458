"""Timepoints, images, segmentations, features and inference (pure logic)."""
