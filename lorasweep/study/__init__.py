"""The study record: the resolved config, the grid of cells, code hashes, provenance and the archive."""
