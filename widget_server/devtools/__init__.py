"""Tools for developers and demos: the simulated traffic of an A/B run."""
