"""The admin's pages, one module per area: each gives the routes of its pages."""
