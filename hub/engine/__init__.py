"""Services the API and the gateway call: registry, twins, methods, presence, jobs."""
