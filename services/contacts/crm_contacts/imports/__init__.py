"""Bulk import of contacts: file formats, the job and its runner, the REST edge."""
