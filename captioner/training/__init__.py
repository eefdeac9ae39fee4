"""Training and evaluation: plain functions over the data, models, decoding and metrics."""
