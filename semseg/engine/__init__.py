"""Training engine: fit / train_one_epoch / evaluate, checkpoints, DDP helpers, the demo."""
