"""Secrets on the controller: generation, the files that hold them, rotation."""
