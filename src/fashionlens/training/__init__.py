"""Training: an explicit loop (train_one_epoch / evaluate), a pure LR schedule, checkpoints, orchestration."""
