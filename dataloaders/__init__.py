"""Data: GSV-Cities training set, evaluation sets, the synthetic data generator."""
