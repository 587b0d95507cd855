"""Demo shop served by ``widget-server demo``: a generated catalog and a small storefront."""
