"""Backups on the controller: the store, the action plugins' tasks, a restore's secrets."""
