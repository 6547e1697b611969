"""The worker process: options, the service and its async loops, the engine
thread, startup from a manifest."""
