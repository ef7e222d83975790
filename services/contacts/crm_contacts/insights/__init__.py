"""Insight reports: pure figures, the insight read models, the REST edge."""
