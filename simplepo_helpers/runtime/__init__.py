"""Runtime plumbing the training loop stands on: device and precision, optimizer and schedule, batch order,
checkpoints, the run's result, and a peak-memory meter. Imports nothing else from the kit."""
