"""Fuzz targets for the parsers that read hostile bytes (see fuzz/README.md)."""
