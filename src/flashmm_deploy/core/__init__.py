"""The controller's basics: errors, plain values, paths, the file lock.  Imports nothing of the package."""
