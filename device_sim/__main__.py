"""``python -m device_sim``: the simulator command line."""

from device_sim.cli import main

if __name__ == "__main__":
    main()
