"""Statistics and reports of A/B experiments, for campaigns and email flows."""
