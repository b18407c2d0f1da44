"""Adapters to the Kubernetes API: build, apply and read the objects a ModelDeployment owns."""
