"""What a worker tells the fleet: rates, the heartbeat status, Prometheus metrics."""
