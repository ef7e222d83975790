"""Segments: saved rules that select contacts, their commands and REST edge."""
