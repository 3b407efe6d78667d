"""Pure domain: devices, twins, methods, jobs. No I/O, no frameworks."""
