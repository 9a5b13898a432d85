"""Training: the loop every Ray Train worker runs, one TorchTrainer per stage, the curriculum."""
