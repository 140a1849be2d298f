"""Serving: the Triton model repository renderer, the server launcher, the BLS request handling,
the metrics export and the client. Triton's python module is imported only inside the server."""
