"""The Ray backend: a Corral cluster is machines of a Ray cluster (docs/ray.md)."""
