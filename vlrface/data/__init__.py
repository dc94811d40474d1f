"""Dataset readers, manifests, data versions and validation."""
