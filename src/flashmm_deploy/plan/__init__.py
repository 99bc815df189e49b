"""The controller pass and what the per-host action plugins share."""
