"""Code that runs inside tritonserver: the Python-backend model host, the BLS service, the
sub-model handlers, the metrics exporter and the transports to sibling models."""
