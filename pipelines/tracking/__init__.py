"""MLflow tracking: runs, the Pareto front and its publisher, the registry, redaction."""
