"""Redis code targets do not need: URLs and pub/sub (the stand-in, `runtime watch`, the CLI)."""
