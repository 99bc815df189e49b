"""The configuration: schema, layers, validation, the effective config and the generated docs."""
