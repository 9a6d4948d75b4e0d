"""Training on Ray Train: loop.py holds the only backward(); trainer.py builds the TorchTrainer."""
