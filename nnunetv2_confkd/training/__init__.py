"""Training: the dual-decoder network, the loss terms and objective, the trainers and their variants."""
