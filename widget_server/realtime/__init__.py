"""The edge: the WebSocket connection, the hub between nodes, the HTTP beacon, the shop's
API, erasure, connection limits and the widget asset."""
