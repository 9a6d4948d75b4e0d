"""Data: the routing-dataset schema, the release importer, splits and labels."""
