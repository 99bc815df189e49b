"""Ansible inventories read without Ansible: the vault, the inventory, host validation."""
