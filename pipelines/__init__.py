"""pag-ray pipelines: datasets, Ray Train curriculum, Ray Tune sweeps, MLflow tracking."""
