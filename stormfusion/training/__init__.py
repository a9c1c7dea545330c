"""Training of the learned models, checkpoints and forecasting (`predict`)."""
