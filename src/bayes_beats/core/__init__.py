"""Lowest layer: params, paths, atomic writes, skip log, GCS, MLflow tracking. Imports no other layer."""
