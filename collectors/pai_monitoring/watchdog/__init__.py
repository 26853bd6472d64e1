"""The watchdog's ``kubernetes`` collector: pods, nodes, GPUs and API server health from the Kubernetes API."""
