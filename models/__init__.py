"""Networks (nn.Module + config) and the MLflow pyfunc wrapper."""
