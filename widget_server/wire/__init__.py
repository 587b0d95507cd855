"""What travels between the widget and the server, and between nodes: typed messages,
parsed and encoded here (pure: no I/O)."""
