"""Data: BraTS discovery, synthetic cohorts, preprocessing, the prepared cache, splits and slices."""
