"""Bulk data processing: ``fan_map`` over lazy inputs, and its crash-safe journal."""
