"""``python -m job_client``."""

from job_client.cli import main

main()
