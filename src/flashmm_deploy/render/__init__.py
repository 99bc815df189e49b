"""A host's files rendered on the controller (and the Kubernetes export)."""
