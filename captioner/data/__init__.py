"""Data: image files, the shared preprocessing, vocabularies, and (later) datasets."""
