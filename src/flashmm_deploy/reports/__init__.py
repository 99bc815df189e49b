"""Reports over many hosts: drift, the audit trail, the filter plugins' functions."""
