"""Email: flows, the durable job queue, templates and messages, signed links, delivery,
double opt-in, the worker and the routes behind the links."""
