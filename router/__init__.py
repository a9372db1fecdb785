"""The router: gRPC ingress, validation, replica picking and the request path across pools."""
